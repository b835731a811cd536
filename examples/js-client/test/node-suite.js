// The checks cli/tests/endo_client.rs runs against a real node: an
// unmodified @endo/captp client over run/captp0.sock. Each check prints
// one JSON line; the Rust test reads them. Run with --expose-gc.
//
// At the drop check it prints {"phase":"holding"} and then
// {"phase":"dropped"}, each time waiting for a line on stdin, so that the
// test can look at the node's session tables in between.

import '@endo/init';

import readline from 'node:readline';
import { E, Far } from '@endo/far';
import { makePromiseKit } from '@endo/promise-kit';
import { connect } from '../connect.js';

const lines = readline.createInterface({ input: process.stdin });
const nextLine = (() => {
  const iterator = lines[Symbol.asyncIterator]();
  return async () => (await iterator.next()).value;
})();

const report = record => console.log(JSON.stringify(record));
const trace = [];
const { bootstrap, close } = await connect(undefined, {
  gcImports: true,
  trace: (direction, message) => trace.push({ direction, message }),
});
const host = E(bootstrap).host();

const timed = async (count, call) => {
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i += 1) {
    // eslint-disable-next-line no-await-in-loop
    await call();
  }
  return Number(process.hrtime.bigint() - start) / 1e6 / count;
};

// Bootstrap.
report({ check: 'bootstrap', ping: await E(bootstrap).ping() });

// Evaluation.
report({ check: 'evaluate', result: await E(host).evaluate(undefined, '1 + 1', [], []) });
const pingMs = await timed(200, () => E(bootstrap).ping());
const evaluateMs = await timed(20, () => E(host).evaluate(undefined, '1 + 1', [], []));
report({ check: 'timing', pingMs, evaluateMs });

// Names.
report({ check: 'list', names: await E(host).list() });

// An exo, and its guard's error carried back as an error.
const COUNTER =
  "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().optional(M.number()).returns(M.number()) }), { incr(k = 1) { n += k; return n; } })";
await E(host).evaluate(undefined, COUNTER, [], [], 'counter');
const counter = await E(host).lookup('counter');
const incremented = await E(counter).incr(5);
const refused = await E(counter)
  .incr('foo')
  .then(
    value => ({ fulfilled: value }),
    error => ({ isError: error instanceof Error, name: error.name, message: error.message }),
  );
report({ check: 'exo', incremented, refused });

// A pipelined chain: bootstrap -> host() -> lookup() -> incr(), sent at
// once, each call addressed to the answer of the one before.
const sentBefore = trace.length;
const chained = await E(E(E(bootstrap).host()).lookup('counter')).incr(10);
const chain = trace.slice(sentBefore);
const calls = chain.filter(({ direction, message }) => direction === 'sent' && message.type === 'CTP_CALL');
const firstReturn = chain.findIndex(({ direction, message }) => direction === 'received' && message.type === 'CTP_RETURN');
const lastCall = chain.indexOf(calls[calls.length - 1]);
report({
  check: 'pipelined',
  chained,
  calls: calls.length,
  targets: calls.map(({ message }) => message.target),
  allSentBeforeAnyReturn: lastCall < firstReturn,
});

// The node calls one of ours: an exo in a worker calls back a JavaScript
// object passed to it.
await E(host).evaluate(
  undefined,
  "makeExo('Caller', M.interface('Caller', {}, { defaultGuards: 'passable' }), { call(callback, text) { return E(callback).got(text); } })",
  [],
  [],
  'caller',
);
const callback = Far('Callback', { got: text => `${text} back` });
const calledBack = await E(E(host).lookup('caller')).call(callback, 'hello');
report({
  check: 'callback',
  calledBack,
  callsReceived: trace.filter(({ direction, message }) => direction === 'received' && message.type === 'CTP_CALL')
    .length,
});

// A promise the node resolves later (CTP_RESOLVE to us), and one we
// resolve later (CTP_RESOLVE to the node).
await E(host).evaluate(
  undefined,
  "let open; const later = new Promise(resolve => { open = resolve; }); makeExo('Gate', M.interface('Gate', {}, { defaultGuards: 'passable' }), { wait() { return harden({ later }); }, open(value) { open(value); } })",
  [],
  [],
  'gate',
);
const gate = E(host).lookup('gate');
const { later } = await E(gate).wait();
const laterSettled = later.then(value => value);
await E(gate).open('opened later');
const fromNode = await laterSettled;
const kit = makePromiseKit();
const stored = E(host).storeValue(kit.promise, 'stored');
setTimeout(() => kit.resolve(42), 50);
await stored;
const fromUs = await E(host).lookup('stored');
const resolves = trace.filter(({ message }) => message.type === 'CTP_RESOLVE');
report({
  check: 'promises',
  fromNode,
  fromUs,
  resolvesReceived: resolves.filter(({ direction }) => direction === 'received').length,
  resolvesSent: resolves.filter(({ direction }) => direction === 'sent').length,
});

// Drops: hold some fresh objects, then let them go.
let things = [];
for (let i = 0; i < 5; i += 1) {
  // eslint-disable-next-line no-await-in-loop
  things.push(await E(host).evaluate(undefined, `makeExo('Thing${i}', undefined, {})`, [], []));
}
report({ phase: 'holding', things: things.length });
await nextLine();
things = undefined;
for (let i = 0; i < 10; i += 1) {
  globalThis.gc?.();
  // eslint-disable-next-line no-await-in-loop
  await new Promise(resolve => setTimeout(resolve, 20));
}
const drops = trace.filter(({ direction, message }) => direction === 'sent' && message.type === 'CTP_DROP');
report({
  phase: 'dropped',
  objectDrops: drops.filter(({ message }) => message.slotID.startsWith('o-')).length,
});
await nextLine();

// The session still works after the drops.
report({ check: 'after drops', ping: await E(bootstrap).ping() });
close();
lines.close();
report({ check: 'done' });
