// Capstan Endo oracle: evaluates the case files in ./cases against the real
// Endo packages and writes conformance data for the Rust test suite to
// ../../protocol/tests/conformance/. Dev tooling only; CI never runs it.
//
// Usage: node generate.mjs [--check]
//   --check  evaluate everything and report, but write no files.

// Must come first: installs SES with debug (unredacted) error messages.
import '@endo/init/debug.js';

import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';

import {
  M,
  mustMatch,
  matches,
  isKey,
  compareKeys,
  assertKey,
  assertCopySet,
  assertCopyBag,
  assertCopyMap,
  assertPattern,
  makeCopySet,
  makeCopyBag,
  makeCopyBagFromElements,
  makeCopyMap,
  getInterfaceGuardPayload,
  getMethodGuardPayload,
} from '@endo/patterns';
import { makeExo, defineExoClassKit } from '@endo/exo';
import { makeMarshal, qp, compareRank, compareRankRemotablesTied } from '@endo/marshal';
import {
  Far,
  makeTagged,
  passStyleOf,
  passableSymbolForName,
  getInterfaceOf,
  getTag,
} from '@endo/pass-style';
import { X, b, makeError } from '@endo/errors';

const here = path.dirname(fileURLToPath(import.meta.url));
const casesDir = path.join(here, 'cases');
const outDir = path.resolve(here, '../../protocol/tests/conformance');
const checkOnly = process.argv.includes('--check');

// ---------------------------------------------------------------------------
// Versions of what actually got loaded (not what package.json asks for).

const installedVersion = name => {
  const file = path.join(here, 'node_modules', name, 'package.json');
  return JSON.parse(fs.readFileSync(file, 'utf8')).version;
};
const generatorTag = [
  'capstan-endo-oracle',
  ...[
    '@endo/patterns',
    '@endo/exo',
    '@endo/marshal',
    '@endo/pass-style',
    '@endo/errors',
    '@endo/init',
    'ses',
  ].map(name => `${name}@${installedVersion(name)}`),
  'debug',
].join(' ');

// ---------------------------------------------------------------------------
// The scope that case expressions are evaluated in.

const promiseOutcomes = new WeakMap();
const resolved = value => {
  const p = harden(Promise.resolve(harden(value)));
  promiseOutcomes.set(p, { fulfilled: value });
  return p;
};
const rejected = reason => {
  const p = Promise.reject(harden(reason));
  p.catch(() => {});
  harden(p);
  promiseOutcomes.set(p, { rejected: reason });
  return p;
};
const pending = () => harden(new Promise(() => {}));

const bytes = (...octets) => {
  const buf = new Uint8Array(octets.flat()).buffer.sliceToImmutable();
  return harden(buf);
};
const zeroBytes = n => harden(new ArrayBuffer(n).sliceToImmutable());
const arrayOf = (n, fill) => harden(Array(n).fill(fill));
const range = n => harden(Array.from({ length: n }, (_, i) => i));
const recordOfSize = (n, prefix = 'k') =>
  harden(Object.fromEntries(range(n).map(i => [`${prefix}${i}`, i])));

const scope = {
  M,
  makeCopySet,
  makeCopyBag,
  makeCopyBagFromElements,
  makeCopyMap,
  makeTagged,
  Far,
  harden,
  passableSymbolForName,
  alice: Far('Alice', {}),
  bob: Far('Bob', {}),
  carol: Far('Carol', {}),
  p1: pending(),
  p2: pending(),
  resolved,
  rejected,
  bytes,
  zeroBytes,
  arrayOf,
  range,
  recordOfSize,
};
harden(scope);
const scopeNames = Object.keys(scope);
const scopeValues = scopeNames.map(n => scope[n]);

class CaseError extends Error {}

// Compile an expression into a function of the scope's names. This uses
// node:vm rather than `new Function`: after lockdown, the tamed Function
// constructor evaluates free identifiers that are not defined to undefined,
// which would silently hide typos in case files.
const compile = src =>
  vm.runInThisContext(
    `(function (${scopeNames.join(', ')}) {\n"use strict";\nreturn (${src}\n);\n})`,
    { filename: 'case-expression' },
  );

const evaluate = (src, where) => {
  if (typeof src !== 'string') {
    throw new CaseError(`${where}: expression must be a string, got ${src}`);
  }
  let fn;
  try {
    fn = compile(src);
  } catch (e) {
    throw new CaseError(`${where}: cannot parse ${src}: ${e.message}`);
  }
  try {
    return harden(fn(...scopeValues));
  } catch (e) {
    throw new CaseError(`${where}: evaluating ${src} threw: ${e.message}`);
  }
};

// ---------------------------------------------------------------------------
// Smallcaps bodies.
//
// Endo 1.10 cannot marshal byteArrays at all, so before marshalling every
// byteArray is replaced by a sentinel string, and afterwards the sentinel in
// the body is replaced by the Capstan test extension `"*<lowercase hex>"`.
// `*` is a smallcaps-reserved prefix, so no real string can collide (a real
// string starting with `*` is encoded as `!*...`).

const sentinelPrefix = 'capstan-bytearray-sentinel-';

const replaceByteArrays = (value, found) => {
  const style = passStyleOf(value);
  switch (style) {
    case 'byteArray': {
      found.push(value);
      return `${sentinelPrefix}${found.length - 1}`;
    }
    case 'copyArray':
      return harden(value.map(v => replaceByteArrays(v, found)));
    case 'copyRecord':
      return harden(
        Object.fromEntries(
          Object.entries(value).map(([k, v]) => [
            k,
            replaceByteArrays(v, found),
          ]),
        ),
      );
    case 'tagged':
      return makeTagged(getTag(value), replaceByteArrays(value.payload, found));
    default:
      return value;
  }
};

const toHex = buf =>
  Array.from(new Uint8Array(buf.slice(0)), o =>
    o.toString(16).padStart(2, '0'),
  ).join('');

const restoreByteArrays = (value, found) => {
  const style = passStyleOf(value);
  switch (style) {
    case 'string': {
      if (!value.startsWith(sentinelPrefix)) return value;
      const buf = found[Number(value.slice(sentinelPrefix.length))];
      // A fresh copy: decoded data shares no identity but slots.
      return harden(buf.sliceToImmutable());
    }
    case 'copyArray':
      return harden(value.map(v => restoreByteArrays(v, found)));
    case 'copyRecord':
      return harden(
        Object.fromEntries(
          Object.entries(value).map(([k, v]) => [
            k,
            restoreByteArrays(v, found),
          ]),
        ),
      );
    case 'tagged':
      return makeTagged(
        getTag(value),
        restoreByteArrays(value.payload, found),
      );
    default:
      return value;
  }
};

// Encode `value` as a smallcaps body, and decode that body again. The decoded
// value is what Endo is then run on, so that it sees exactly what a peer
// reading the body would see: no shared identity except through slots
// (repeated remotables and promises decode to the same object), error
// `cause`/`errors` dropped (Endo 1.10 does not encode them).
const encodeBody = value => {
  const slotVals = [];
  const valToSlot = v => {
    slotVals.push(v);
    return `slot${slotVals.length - 1}`;
  };
  const slotToVal = slot => slotVals[Number(slot.slice(4))];
  const { toCapData, fromCapData } = makeMarshal(valToSlot, slotToVal, {
    serializeBodyFormat: 'smallcaps',
    errorTagging: 'off',
  });
  const found = [];
  const stripped = replaceByteArrays(value, found);
  const capData = toCapData(stripped);
  const decoded = restoreByteArrays(fromCapData(capData), found);
  let { body } = capData;
  found.forEach((buf, i) => {
    body = body
      .split(JSON.stringify(`${sentinelPrefix}${i}`))
      .join(JSON.stringify(`*${toHex(buf)}`));
  });
  if (body.includes(sentinelPrefix)) {
    throw new CaseError(`internal: sentinel left in body ${body}`);
  }
  return { body, slots: capData.slots.length, slotVals, decoded };
};

// Describe how the promises among a body's slots settle (only those made by
// `resolved(v)` / `rejected(e)`; the `p1`/`p2` promises never settle).
const settlementsOf = (values, slotVals) => {
  const out = [];
  slotVals.forEach((v, slot) => {
    const outcome = promiseOutcomes.get(v);
    if (outcome === undefined) return;
    if ('fulfilled' in outcome) {
      // eslint-disable-next-line no-use-before-define
      out.push({ slot, fulfilled: encodeAlongside(values, outcome.fulfilled) });
    } else {
      // eslint-disable-next-line no-use-before-define
      out.push({ slot, rejected: encodeAlongside(values, outcome.rejected) });
    }
  });
  return out;
};

// Put the body of `values` (an array) in `record`, and return the decoded
// array for Endo to work on.
const withBody = (record, values) => {
  const { body, slots, slotVals, decoded } = encodeBody(harden(values));
  record.body = body;
  record.slots = slots;
  const settlements = settlementsOf(values, slotVals);
  if (settlements.length > 0) record.settlements = settlements;
  return decoded;
};

// Encode `extra` with the same slot numbering as the case body: it is cut out
// of the encoding of [...values, extra]. A reference already in the body keeps
// its index (and, having appeared before, carries no iface); a slot index at
// or beyond the case's `slots` count is a reference new to `extra`.
const encodeAlongside = (values, extra) => {
  const { body } = encodeBody(harden([...values, extra]));
  const parsed = JSON.parse(body.slice(1));
  return `#${JSON.stringify(parsed[parsed.length - 1])}`;
};

const failure = e => ({ message: e.message, errorName: e.name });

// ---------------------------------------------------------------------------
// Kinds.

const entryFields = (entry, names) => {
  if (typeof entry === 'string') {
    return { [names[0]]: entry };
  }
  if (Array.isArray(entry)) {
    return Object.fromEntries(names.map((n, i) => [n, entry[i]]));
  }
  return entry;
};

const passThrough = (out, entry) => {
  if (entry && !Array.isArray(entry) && typeof entry === 'object') {
    if (entry.note !== undefined) out.note = entry.note;
    if (entry.specMessage !== undefined) out.specMessage = entry.specMessage;
    if (entry.artifact !== undefined) out.artifact = entry.artifact;
  }
  return out;
};

const runMatch = (id, entry, expectation, problems) => {
  const e = entryFields(entry, ['specimen', 'pattern', 'label']);
  let specimen = evaluate(e.specimen, `${id} specimen`);
  let pattern = evaluate(e.pattern, `${id} pattern`);
  const hasLabel = e.label !== undefined;
  let label = hasLabel ? evaluate(e.label, `${id} label`) : undefined;
  const source = `mustMatch(${e.specimen}, ${e.pattern}${
    hasLabel ? `, ${e.label}` : ''
  })`;
  const out = { id, kind: 'match', source };
  [specimen, pattern, label] = withBody(
    out,
    hasLabel ? [specimen, pattern, label] : [specimen, pattern],
  );
  let matchesResult;
  try {
    matchesResult = matches(specimen, pattern);
  } catch (err) {
    throw new CaseError(
      `${id}: matches() threw (${err.message}); use a badPattern case`,
    );
  }
  let thrown;
  try {
    mustMatch(specimen, pattern, label);
  } catch (err) {
    thrown = err;
  }
  if ((thrown === undefined) !== matchesResult) {
    throw new CaseError(`${id}: matches and mustMatch disagree`);
  }
  out.matches = matchesResult;
  if (thrown) Object.assign(out, failure(thrown));
  if (expectation === 'pass' && !matchesResult) {
    problems.push(`${id}: expected to pass, got: ${thrown.message}`);
  }
  if (expectation === 'fail' && matchesResult) {
    problems.push(`${id}: expected to fail, but it matched`);
  }
  return passThrough(out, entry);
};

const runBadPattern = (id, entry, _expectation, problems) => {
  const e = entryFields(entry, ['specimen', 'pattern']);
  const out = {
    id,
    kind: 'badPattern',
    source: `mustMatch(${e.specimen}, ${e.pattern})`,
  };
  const [specimen, pattern] = withBody(out, [
    evaluate(e.specimen, `${id} specimen`),
    evaluate(e.pattern, `${id} pattern`),
  ]);
  let thrown;
  try {
    mustMatch(specimen, pattern);
  } catch (err) {
    thrown = err;
  }
  if (thrown === undefined) {
    problems.push(`${id}: mustMatch did not throw for a bad pattern`);
    return out;
  }
  Object.assign(out, failure(thrown));
  try {
    const r = matches(specimen, pattern);
    out.matchesThrows = false;
    out.matchesResult = r;
  } catch (err) {
    out.matchesThrows = true;
    out.matchesMessage = err.message;
  }
  try {
    assertPattern(pattern);
    out.isPattern = true;
  } catch (err) {
    out.isPattern = false;
    out.assertPatternMessage = err.message;
  }
  return passThrough(out, entry);
};

const sign = n => (n < 0 ? -1 : n > 0 ? 1 : 0);

const runOrder = (id, entry) => {
  const e = entryFields(entry, ['a', 'b']);
  const out = {
    id,
    kind: 'order',
    source: `compareRank(${e.a}, ${e.b}); compareKeys(${e.a}, ${e.b})`,
  };
  const [a, bb] = withBody(out, [
    evaluate(e.a, `${id} a`),
    evaluate(e.b, `${id} b`),
  ]);
  const rank = compareRank(a, bb);
  // compareRank gives NaN once it meets two distinct remotables; record
  // that, and the remotables-tied order the spec's total order follows.
  out.rank = Number.isNaN(rank) ? 'unordered' : sign(rank);
  out.rankRemotablesTied = sign(compareRankRemotablesTied(a, bb));
  if (!isKey(a) || !isKey(bb)) {
    out.key = 'notKey';
  } else {
    try {
      const k = compareKeys(a, bb);
      out.key = Number.isNaN(k) ? null : sign(k);
    } catch (err) {
      out.key = 'throws';
      out.keyMessage = err.message;
    }
  }
  return passThrough(out, entry);
};

const checkers = { assertKey, assertCopySet, assertCopyBag, assertCopyMap };

const runCollection = (id, entry, expectation, problems, group) => {
  const e = entryFields(entry, ['value']);
  const check = e.check ?? group.check;
  const checker = checkers[check];
  if (!checker) throw new CaseError(`${id}: unknown check ${check}`);
  const out = { id, kind: 'collection', check, source: `${check}(${e.value})` };
  const [value] = withBody(out, [evaluate(e.value, `${id} value`)]);
  try {
    checker(value);
    out.valid = true;
  } catch (err) {
    out.valid = false;
    Object.assign(out, failure(err));
  }
  if ((expectation === 'valid') !== out.valid) {
    problems.push(`${id}: expected ${expectation}, got valid=${out.valid}`);
  }
  return passThrough(out, entry);
};

const makers = {
  copySet: makeCopySet,
  copyBag: makeCopyBag,
  copyBagFromElements: makeCopyBagFromElements,
  copyMap: makeCopyMap,
};
const makerNames = {
  copySet: 'makeCopySet',
  copyBag: 'makeCopyBag',
  copyBagFromElements: 'makeCopyBagFromElements',
  copyMap: 'makeCopyMap',
};

const runMake = (id, entry, expectation, problems, group) => {
  const e = entryFields(entry, ['input']);
  const maker = e.maker ?? group.maker;
  if (!makers[maker]) throw new CaseError(`${id}: unknown maker ${maker}`);
  const out = {
    id,
    kind: 'make',
    maker,
    source: `${makerNames[maker]}(${e.input})`,
  };
  const [input] = withBody(out, [evaluate(e.input, `${id} input`)]);
  try {
    const made = makers[maker](input);
    out.ok = true;
    out.output = encodeAlongside([input], made);
  } catch (err) {
    out.ok = false;
    Object.assign(out, failure(err));
  }
  if ((expectation === 'ok') !== out.ok) {
    problems.push(`${id}: expected ${expectation}, got ok=${out.ok}`);
  }
  return passThrough(out, entry);
};

// qp() marshals with errorTagging on, whose default marshalSaveError logs
// every error it encodes to the console. Silence that while it runs.
const quietly = thunk => {
  const saved = globalThis.console;
  globalThis.console = { ...saved, log: () => {} };
  try {
    return thunk();
  } finally {
    globalThis.console = saved;
  }
};

const runQuote = (id, entry) => {
  const e = entryFields(entry, ['value']);
  const out = { id, kind: 'quote', source: `X\`\${${e.value}}\`` };
  const [value] = withBody(out, [evaluate(e.value, `${id} value`)]);
  out.quoted = makeError(X`${value}`).message;
  out.bare = makeError(X`${b(value)}`).message;
  try {
    const justin = quietly(() => qp(value));
    out.justin = justin;
    out.justinQuoted = makeError(X`${justin}`).message;
  } catch (err) {
    out.justin = null;
    out.justinMessage = err.message;
  }
  return passThrough(out, entry);
};

// Which methods of an interface guard are callWhen (async).
const asyncMethodNames = guard => {
  const names = new Set();
  if (guard === undefined) return names;
  const { methodGuards } = getInterfaceGuardPayload(guard);
  for (const [name, mg] of Object.entries(methodGuards)) {
    if (getMethodGuardPayload(mg).callKind === 'async') names.add(name);
  }
  return names;
};

const makeBehavior = (names, asyncNames, ret) =>
  Object.fromEntries(
    names.map(name => [
      name,
      asyncNames.has(name)
        ? {
            async [name]() {
              return ret;
            },
          }[name]
        : {
            [name]() {
              return ret;
            },
          }[name],
    ]),
  );

const callAndSettle = async (target, methodName, args, isAsync) => {
  let result = target[methodName](...args);
  if (isAsync) result = await result;
  return result;
};

const exoExpectation = (out, expectation, id, problems) => {
  const got = out.phase === 'define' ? 'define' : out.ok ? 'ok' : 'fail';
  if (got !== expectation) {
    problems.push(
      `${id}: expected ${expectation}, got ${got}${
        out.message ? `: ${out.message}` : ''
      }`,
    );
  }
};

const runExo = async (id, entry, expectation, problems) => {
  const tag = entry.tag ?? 'Tag';
  let guard =
    entry.guard === undefined ? undefined : evaluate(entry.guard, `${id} guard`);
  let args = evaluate(entry.args ?? '[]', `${id} args`);
  let ret = evaluate(entry.ret ?? 'undefined', `${id} ret`);
  const methodName = entry.call;
  const methodNames = entry.methods ?? [methodName];
  const asyncNames = asyncMethodNames(guard);
  const behaviorSrc = methodNames
    .map(
      n =>
        `${asyncNames.has(n) ? 'async ' : ''}${n}() { return ${
          entry.ret ?? 'undefined'
        }; }`,
    )
    .join(', ');
  const out = {
    id,
    kind: 'exo',
    tag,
    methods: methodNames,
    source: `makeExo(${JSON.stringify(tag)}, ${
      entry.guard ?? 'undefined'
    }, { ${behaviorSrc} }).${methodName}(...${entry.args ?? '[]'})`,
  };
  [guard, , args, ret] = withBody(out, [guard, methodName, args, ret]);
  let exo;
  try {
    exo = makeExo(tag, guard, makeBehavior(methodNames, asyncNames, ret));
  } catch (err) {
    out.ok = false;
    out.phase = 'define';
    Object.assign(out, failure(err));
    exoExpectation(out, expectation, id, problems);
    return passThrough(out, entry);
  }
  out.iface = getInterfaceOf(exo);
  if (typeof exo[methodName] !== 'function') {
    throw new CaseError(`${id}: exo has no method ${methodName}`);
  }
  try {
    const result = await callAndSettle(
      exo,
      methodName,
      args,
      asyncNames.has(methodName),
    );
    out.ok = true;
    out.phase = 'call';
    out.result = encodeAlongside([guard, methodName, args, ret], result);
  } catch (err) {
    out.ok = false;
    out.phase = 'call';
    Object.assign(out, failure(err));
  }
  exoExpectation(out, expectation, id, problems);
  return passThrough(out, entry);
};

const runExoKit = async (id, entry, expectation, problems) => {
  const tag = entry.tag ?? 'Tag';
  let guardKit =
    entry.guards === undefined
      ? undefined
      : evaluate(entry.guards, `${id} guards`);
  let args = evaluate(entry.args ?? '[]', `${id} args`);
  let ret = evaluate(entry.ret ?? 'undefined', `${id} ret`);
  const { facet, call: methodName } = entry;
  const methodsKit = entry.methods;
  const out = {
    id,
    kind: 'exoKit',
    tag,
    methods: methodsKit,
    facet,
    source: `defineExoClassKit(${JSON.stringify(tag)}, ${
      entry.guards ?? 'undefined'
    }, () => ({}), ${JSON.stringify(methodsKit)} /* each returns ${
      entry.ret ?? 'undefined'
    } */)().${facet}.${methodName}(...${entry.args ?? '[]'})`,
  };
  [guardKit, , , args, ret] = withBody(out, [
    guardKit,
    facet,
    methodName,
    args,
    ret,
  ]);
  const behaviorKit = {};
  const asyncByFacet = {};
  for (const [facetName, names] of Object.entries(methodsKit)) {
    const facetGuard = guardKit && guardKit[facetName];
    const asyncNames = facetGuard ? asyncMethodNames(facetGuard) : new Set();
    asyncByFacet[facetName] = asyncNames;
    behaviorKit[facetName] = makeBehavior(names, asyncNames, ret);
  }
  let kit;
  try {
    const makeKit = defineExoClassKit(tag, guardKit, () => ({}), behaviorKit);
    kit = makeKit();
  } catch (err) {
    out.ok = false;
    out.phase = 'define';
    Object.assign(out, failure(err));
    exoExpectation(out, expectation, id, problems);
    return passThrough(out, entry);
  }
  out.facetIfaces = Object.fromEntries(
    Object.keys(kit)
      .sort()
      .map(name => [name, getInterfaceOf(kit[name])]),
  );
  const target = kit[facet];
  if (!target || typeof target[methodName] !== 'function') {
    throw new CaseError(`${id}: facet ${facet} has no method ${methodName}`);
  }
  try {
    const result = await callAndSettle(
      target,
      methodName,
      args,
      asyncByFacet[facet].has(methodName),
    );
    out.ok = true;
    out.phase = 'call';
    out.result = encodeAlongside(
      [guardKit, facet, methodName, args, ret],
      result,
    );
  } catch (err) {
    out.ok = false;
    out.phase = 'call';
    Object.assign(out, failure(err));
  }
  exoExpectation(out, expectation, id, problems);
  return passThrough(out, entry);
};

// Building a pattern or guard (or a key-checked collection) with the M
// namespace may itself throw; record that message. No body: the value could
// not be built.
const runConstruct = (id, entry, expectation, problems) => {
  const e = entryFields(entry, ['expr']);
  const out = { id, kind: 'construct', source: e.expr };
  let fn;
  try {
    fn = compile(e.expr);
  } catch (err) {
    throw new CaseError(`${id}: cannot parse ${e.expr}: ${err.message}`);
  }
  try {
    harden(fn(...scopeValues));
    out.ok = true;
  } catch (err) {
    if (err instanceof ReferenceError) {
      throw new CaseError(`${id}: evaluating ${e.expr} threw: ${err.message}`);
    }
    out.ok = false;
    Object.assign(out, failure(err));
  }
  if ((expectation === 'ok') !== out.ok) {
    problems.push(`${id}: expected ${expectation}, got ok=${out.ok}`);
  }
  return passThrough(out, entry);
};

// For each kind: the runner, and the case-list keys a group may have (each
// key is also the expectation that the generator verifies).
const kinds = {
  match: { run: runMatch, lists: ['pass', 'fail'] },
  badPattern: { run: runBadPattern, lists: ['cases'] },
  order: { run: runOrder, lists: ['cases'] },
  collection: { run: runCollection, lists: ['valid', 'invalid'] },
  make: { run: runMake, lists: ['ok', 'throws'] },
  quote: { run: runQuote, lists: ['cases'] },
  exo: { run: runExo, lists: ['ok', 'fail', 'define'] },
  exoKit: { run: runExoKit, lists: ['ok', 'fail', 'define'] },
  construct: { run: runConstruct, lists: ['ok', 'throws'] },
};

// ---------------------------------------------------------------------------

const main = async () => {
  const inputFiles = fs
    .readdirSync(casesDir)
    .filter(f => f.endsWith('.json'))
    .sort();
  const problems = [];
  const seenIds = new Set();
  const counts = {};
  const outputs = [];
  let total = 0;

  for (const file of inputFiles) {
    const input = JSON.parse(fs.readFileSync(path.join(casesDir, file), 'utf8'));
    const cases = [];
    for (const group of input.groups) {
      const kind = kinds[group.kind];
      if (!kind) {
        problems.push(`${file}: group ${group.group}: unknown kind ${group.kind}`);
        continue;
      }
      for (const key of Object.keys(group)) {
        if (
          !['group', 'kind', 'check', 'maker', 'comment'].includes(key) &&
          !kind.lists.includes(key)
        ) {
          problems.push(`${file}: group ${group.group}: unknown key ${key}`);
        }
      }
      for (const list of kind.lists) {
        const entries = group[list] ?? [];
        for (let i = 0; i < entries.length; i += 1) {
          const entry = entries[i];
          const suffix = list === 'cases' ? '' : `-${list}`;
          const id =
            (entry && !Array.isArray(entry) && entry.id) ||
            `${group.group}${suffix}-${i + 1}`;
          if (seenIds.has(id)) {
            problems.push(`duplicate case id ${id}`);
            continue;
          }
          seenIds.add(id);
          try {
            // eslint-disable-next-line no-await-in-loop
            const out = await kind.run(id, entry, list, problems, group);
            cases.push(out);
            counts[out.kind] = (counts[out.kind] ?? 0) + 1;
            total += 1;
          } catch (err) {
            problems.push(
              err instanceof CaseError
                ? err.message
                : `${id}: generator failure: ${err.stack}`,
            );
          }
        }
      }
    }
    outputs.push({ file, data: { generator: generatorTag, cases } });
  }

  // Cases carrying the spec's claimed message: report divergences (these are
  // findings about the spec, not generator failures).
  const divergences = [];
  for (const { data } of outputs) {
    for (const c of data.cases) {
      if (c.specMessage !== undefined && c.specMessage !== c.message) {
        divergences.push(
          `${c.id}\n    spec:  ${JSON.stringify(c.specMessage)}\n    endo:  ${JSON.stringify(c.message)}`,
        );
      }
    }
  }

  process.stderr.write(`${generatorTag}\n`);
  for (const [k, n] of Object.entries(counts).sort()) {
    process.stderr.write(`  ${k}: ${n}\n`);
  }
  process.stderr.write(`  total: ${total}\n`);
  if (divergences.length > 0) {
    process.stderr.write(
      `spec table divergences (informational):\n  ${divergences.join('\n  ')}\n`,
    );
  }
  if (problems.length > 0) {
    process.stderr.write(`\n${problems.length} problem(s):\n`);
    for (const p of problems) process.stderr.write(`  ${p}\n`);
    process.stderr.write('no files written\n');
    process.exit(1);
  }
  if (checkOnly) return;
  fs.mkdirSync(outDir, { recursive: true });
  for (const { file, data } of outputs) {
    fs.writeFileSync(
      path.join(outDir, file),
      `${JSON.stringify(data, null, 2)}\n`,
    );
  }
  process.stderr.write(`wrote ${outputs.length} file(s) to ${outDir}\n`);
};

main().catch(err => {
  process.stderr.write(`generator crashed: ${err.stack}\n`);
  process.exit(1);
});
