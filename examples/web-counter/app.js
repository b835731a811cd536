// The page side of the counter app: connect to the node that served this
// page, look up `counter` among its agent's names, and call it.
import { connect, E } from '/capstan/client.js';

const $ = (id) => document.getElementById(id);

async function main() {
  const powers = await connect();
  const counter = E(powers).lookup('counter');
  const show = (count) => { $('count').textContent = String(count); };
  // Pipelined: incr() goes out aimed at lookup()'s answer, before it returns.
  show(await E(counter).incr());
  $('names').textContent = (await E(powers).list()).join(', ');
  $('incr').disabled = false;
  $('incr').addEventListener('click', async () => show(await E(counter).incr()));
  $('status').textContent = 'connected';
}

main().catch((error) => {
  $('status').textContent = `error: ${error.message}`;
});
