// The limit beside capstan-socket.mjs: Endo's own @endo/captp between two
// Node.js processes over a Unix socket (netstrings), the server offering
// an echo object. Prints microseconds per sequential E(echo).echo(i).
// Usage: node endo-pair.mjs server SOCKET | node endo-pair.mjs client SOCKET ROUNDS
import '@endo/init';

import net from 'node:net';
import { once } from 'node:events';

import { makeCapTP } from '@endo/captp';
import { E, Far } from '@endo/far';
import { makeNetstringReader, makeNetstringWriter } from '@endo/netstring';
import { makeNodeReader, makeNodeWriter } from '@endo/stream-node';

const session = (socket, name, bootstrap) => {
  const writer = makeNetstringWriter(makeNodeWriter(socket));
  const reader = makeNetstringReader(makeNodeReader(socket));
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const captp = makeCapTP(
    name,
    (message) => writer.next(encoder.encode(JSON.stringify(message))),
    bootstrap,
    { onReject: () => {} },
  );
  (async () => {
    for await (const bytes of reader) captp.dispatch(JSON.parse(decoder.decode(bytes)));
  })().catch(() => {});
  return captp;
};

const [role, socketPath, roundsText] = process.argv.slice(2);
if (role === 'server') {
  const echo = Far('Echo', { echo: (x) => x });
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    session(socket, 'server', echo);
  });
  server.listen(socketPath, () => console.log('listening'));
} else {
  const rounds = Number(roundsText);
  const socket = net.connect(socketPath);
  await once(socket, 'connect');
  const { getBootstrap, abort } = session(socket, 'client', undefined);
  const echo = getBootstrap();
  for (let i = 0; i < 50; i += 1) await E(echo).echo(i);
  const start = performance.now();
  for (let i = 0; i < rounds; i += 1) await E(echo).echo(i);
  console.log(((performance.now() - start) * 1000) / rounds);
  abort();
  socket.end();
}
