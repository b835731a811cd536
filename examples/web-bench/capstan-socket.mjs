// Times sequential E(echo).echo(i) (an exo in a worker), then
// E(bootstrap).ping() (answered by the node), from Node.js through
// @endo/captp over the node's run/captp0.sock (netstrings). Prints
// microseconds per call of each, space-separated.
// Usage: node capstan-socket.mjs SOCKET ROUNDS
import '@endo/init';

import net from 'node:net';
import { once } from 'node:events';

import { makeCapTP } from '@endo/captp';
import { E } from '@endo/far';
import { makeNetstringReader, makeNetstringWriter } from '@endo/netstring';
import { makeNodeReader, makeNodeWriter } from '@endo/stream-node';

const [socketPath, roundsText] = process.argv.slice(2);
const rounds = Number(roundsText);
const socket = net.connect(socketPath);
await once(socket, 'connect');
const writer = makeNetstringWriter(makeNodeWriter(socket));
const reader = makeNetstringReader(makeNodeReader(socket));
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const { dispatch, getBootstrap, abort } = makeCapTP(
  'bench',
  (message) => writer.next(encoder.encode(JSON.stringify(message))),
  undefined,
  { onReject: () => {} },
);
(async () => {
  for await (const bytes of reader) dispatch(JSON.parse(decoder.decode(bytes)));
})().catch(() => {});

const bootstrap = getBootstrap();
const echo = await E(E(bootstrap).host()).lookup('echo');
const perCall = async (call) => {
  for (let i = 0; i < 50; i += 1) await call(i);
  const start = performance.now();
  for (let i = 0; i < rounds; i += 1) await call(i);
  return ((performance.now() - start) * 1000) / rounds;
};
const viaWorker = await perCall((i) => E(echo).echo(i));
const nodeOnly = await perCall(() => E(bootstrap).ping());
console.log(`${viaWorker} ${nodeOnly}`);
abort();
socket.end();
