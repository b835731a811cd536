// Capstan Endo CapTP oracle: asks the real @endo/captp and @endo/marshal
// how they write and read CapTP messages and bodies, and writes the answers
// as conformance data for the Rust test suite to
// ../../protocol/tests/endo_captp/. Dev tooling only; CI never runs it.
//
// Usage: node --expose-gc generate.mjs [--check]
//   --check  evaluate everything and report, but write no files.

import '@endo/init/debug.js';

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { makeCapTP, E } from '@endo/captp';
import { makeMarshal } from '@endo/marshal';
import { Far, makeTagged, passableSymbolForName, Remotable } from '@endo/pass-style';
import { makePromiseKit } from '@endo/promise-kit';
import { Fail } from '@endo/errors';

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.resolve(here, '../../protocol/tests/endo_captp');
const checkOnly = process.argv.includes('--check');

const installedVersion = name =>
  JSON.parse(fs.readFileSync(path.join(here, 'node_modules', name, 'package.json'), 'utf8')).version;
const generatorTag = [
  'capstan-endo-captp-oracle',
  ...['@endo/captp', '@endo/marshal', '@endo/pass-style', '@endo/init', 'ses'].map(
    name => `${name}@${installedVersion(name)}`,
  ),
].join(' ');

const write = (name, data) => {
  const text = `${JSON.stringify({ generator: generatorTag, ...data }, null, 1)}\n`;
  if (checkOnly) {
    console.error(`would write ${name} (${text.length} bytes)`);
  } else {
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, name), text);
    console.error(`wrote ${name}`);
  }
};

// ---------------------------------------------------------------------------
// Bodies.

const bodyCases = JSON.parse(fs.readFileSync(path.join(here, 'cases/bodies.json'), 'utf8'));

const makeScope = () => {
  const never = () => harden(makePromiseKit().promise);
  return {
    Far,
    harden,
    makeTagged,
    passableSymbolForName,
    alice: Far('Alice', {}),
    bob: Far('Bob', {}),
    carol: Remotable('Remotable', undefined, {}),
    debug: Remotable('DebugName: carol', undefined, {}),
    p1: never(),
    p2: never(),
  };
};

// Slots as @endo/captp names its own exports: o+N for objects, p+N for
// promises, numbered in order of first export.
const makeSlotter = () => {
  const slots = new Map();
  let objects = 0;
  let promises = 0;
  const valToSlot = val => {
    if (!slots.has(val)) {
      const slot = val instanceof Promise ? `p+${(promises += 1)}` : `o+${(objects += 1)}`;
      slots.set(val, slot);
    }
    return slots.get(val);
  };
  return valToSlot;
};

const values = bodyCases.values.map((source, index) => {
  const scope = makeScope();
  const names = Object.keys(scope);
  // eslint-disable-next-line no-new-func
  const value = harden(Function(...names, `return (${source});`)(...names.map(name => scope[name])));
  // errorTagging 'off' gives what Capstan writes (no errorId); captp's own
  // marshal tags errors, and the decode cases below cover that form.
  const valToSlot = makeSlotter();
  const capdata = makeMarshal(valToSlot, undefined, {
    serializeBodyFormat: 'capdata',
    errorTagging: 'off',
  }).serialize(value);
  const smallcaps = makeMarshal(makeSlotter(), undefined, {
    serializeBodyFormat: 'smallcaps',
    errorTagging: 'off',
  }).serialize(value);
  return { id: `value-${index}`, source, capdata, smallcaps };
});

// Raw bodies: does @endo/marshal's unserialize accept them? Slots are
// o+1 and o+2 (objects the sender exports).
const decodes = bodyCases.decode.map((body, index) => {
  const slots = ['o+1', 'o+2'];
  // As in @endo/captp, a slot index beyond the slot list fails (there it
  // fails reversing an undefined slot); an absent iface makes a presence
  // named "Remotable" here.
  const { unserialize } = makeMarshal(undefined, (slot, iface) => {
    typeof slot === 'string' || Fail`no slot at that index`;
    return Remotable(iface === undefined ? 'Remotable' : iface, undefined, {});
  });
  try {
    const value = unserialize(harden({ body, slots }));
    const again = makeMarshal(makeSlotter(), undefined, {
      serializeBodyFormat: 'capdata',
      errorTagging: 'off',
    }).serialize(value);
    return { id: `decode-${index}`, body, slots, accepted: true, capdata: again };
  } catch (error) {
    return { id: `decode-${index}`, body, slots, accepted: false, message: `${error.message}` };
  }
});

write('bodies.json', { values, decodes });

// ---------------------------------------------------------------------------
// A recorded conversation between two real @endo/captp peers, as the Endo
// daemon would write it (JSON.stringify of each message).

const transcript = [];
const { promise: done, resolve: finished } = makePromiseKit();

const { promise: later, resolve: resolveLater } = makePromiseKit();
const { promise: refused, reject: rejectRefused } = makePromiseKit();
refused.catch(() => {});

const counter = Far('Counter', {
  incr(n = 1) {
    return n + 1;
  },
});
const server = Far('Server', {
  ping: () => 'pong',
  info: () => harden({ count: 3 }),
  counter: () => counter,
  echo: (...args) => harden(args),
  fail: () => {
    throw TypeError('no such thing');
  },
  later: () => harden({ later, refused }),
  callBack: cb => E(cb).got('hello'),
  adder: () => Far('add', (a, b) => a + b),
});

let toServer;
let toClient;
const serverSide = makeCapTP(
  'server',
  obj => {
    transcript.push({ from: 'server', json: JSON.stringify(obj) });
    toClient(obj);
  },
  server,
  { gcImports: true },
);
const clientSide = makeCapTP(
  'client',
  obj => {
    transcript.push({ from: 'client', json: JSON.stringify(obj) });
    toServer(obj);
  },
  undefined,
  { gcImports: true },
);
// Deliver by JSON round trip, one turn later, as over a socket.
toServer = obj => setImmediate(() => serverSide.dispatch(JSON.parse(JSON.stringify(obj))));
toClient = obj => setImmediate(() => clientSide.dispatch(JSON.parse(JSON.stringify(obj))));

// Results as capdata bodies (remotables as o+N), to compare with what a
// Capstan run of the same calls gives.
const asBody = value =>
  makeMarshal(makeSlotter(), undefined, { serializeBodyFormat: 'capdata', errorTagging: 'off' }).serialize(
    harden(value),
  ).body;
const settle = p => p.then(v => ({ ok: asBody(v) }), e => ({ error: `${e.message}` }));
const tick = () => new Promise(r => setTimeout(r, 20));

const run = async () => {
  const bootstrap = clientSide.getBootstrap();
  const results = [];
  results.push(await settle(E(bootstrap).ping()));
  // Pipelined: a call on the result of a call not yet answered.
  results.push(await settle(E(E(bootstrap).counter()).incr(41)));
  results.push(await settle(E(bootstrap).echo(undefined, 1n, [NaN], { a: null })));
  results.push(await settle(E(bootstrap).fail()));
  results.push(await settle(E.get(E(bootstrap).info()).count));
  results.push(await settle(E(E(bootstrap).adder())(2, 3)));
  const callback = Far('Callback', { got: text => `${text} back` });
  results.push(await settle(E(bootstrap).callBack(callback)));
  const { later: remoteLater, refused: remoteRefused } = await E(bootstrap).later();
  resolveLater('resolved later');
  rejectRefused(RangeError('refused'));
  results.push(await settle(remoteLater));
  results.push(await settle(remoteRefused));
  await tick();
  // Let go of everything the client imported, so its GC sends CTP_DROP.
  for (let i = 0; i < 5; i += 1) {
    globalThis.gc?.();
    await tick();
  }
  clientSide.abort(Error('done'));
  await tick();
  finished(results);
};

run().catch(error => finished([{ error: `${error.stack}` }]));
const results = await done;
if (!globalThis.gc) {
  console.error('note: run with --expose-gc to record CTP_DROP');
}
// GC finalizes in no fixed order: sort each run of drops from one side so
// that the file is the same from run to run.
const isDrop = m => m.json.startsWith('{"type":"CTP_DROP"');
const messages = [];
for (const message of transcript) {
  const run = [];
  while (messages.length && isDrop(messages.at(-1)) && isDrop(message) && messages.at(-1).from === message.from) {
    run.unshift(messages.pop());
  }
  messages.push(...[...run, message].sort((a, b) => (isDrop(a) ? a.json.localeCompare(b.json) : 0)));
}
write('transcript.json', { results, messages });
console.error(`${values.length} values, ${decodes.length} decodes, ${transcript.length} messages`);
