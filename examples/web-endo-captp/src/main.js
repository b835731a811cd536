// A page that brings its own CapTP: @endo/captp from npm, bundled with
// esbuild into app/bundle.js. It speaks to the node's WebSocket exactly
// as /capstan/client.js does, one JSON message per text frame.
import '@endo/init';
import { makeCapTP } from '@endo/captp';
import { E } from '@endo/far';

const out = document.getElementById('out');
const token = /^\/app\/([0-9a-f]+)\//.exec(location.pathname)[1];
const socket = new WebSocket(`ws://${location.host}/capstan/ws/${token}`);

const { dispatch, getBootstrap, abort } = makeCapTP(
  'page',
  (message) => socket.send(JSON.stringify(message)),
  undefined,
  { onReject: () => {} },
);
socket.addEventListener('message', (event) => dispatch(JSON.parse(event.data)));
socket.addEventListener('close', () => abort());
socket.addEventListener('open', async () => {
  try {
    const powers = getBootstrap();
    // Pipelined through the agent's lookup() answer, as in client.js.
    const count = await E(E(powers).lookup('counter')).incr();
    const names = await E(powers).list();
    out.textContent = `count ${count}; names ${names.join(',')}`;
  } catch (error) {
    out.textContent = `error: ${error.message}`;
  }
});
