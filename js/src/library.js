// The guest library: evaluated once per worker in a private realm that no
// guest can reach, then frozen. Every compartment shares these frozen
// functions (as SES compartments share one realm's hardened library).
// Rules about values (pass styles, patterns, guards, collections) live in
// Rust (`natives`); this file only does what must be JavaScript: walking
// and freezing objects, classifying them for the Rust converter, the
// eventual-send machinery and the exo wrappers.
'use strict';
(natives) => {
  const {
    create,
    defineProperty,
    freeze,
    getOwnPropertyDescriptors,
    getPrototypeOf,
    isFrozen,
    preventExtensions,
    seal,
    setPrototypeOf,
  } = Object;
  const { apply, ownKeys } = Reflect;
  const objectToString = Object.prototype.toString;
  const isView = ArrayBuffer.isView;
  const isArray = Array.isArray;
  const stringify = JSON.stringify;
  const PromiseCtor = Promise;
  const resolvePromise = value => PromiseCtor.resolve(value);
  const promiseThen = (promise, onFulfilled, onRejected) =>
    apply(PromiseCtor.prototype.then, promise, [onFulfilled, onRejected]);
  const ProxyCtor = Proxy;
  const PASS_STYLE = Symbol.for('passStyle');
  const toStringTag = Symbol.toStringTag;

  const hardened = new WeakSet();
  const plainProtos = new WeakSet();
  const arrayProtos = new WeakSet();
  // Remotables made here: Far objects, exos, and presences of host
  // references. Value: { iface, importId?, exo? }.
  const remotables = new WeakMap();
  // The engine keeps the pending host promises, by address (a WeakMap
  // here would hash by address too, but QuickJS leaves most of its
  // buckets empty, so its chains would grow with every send in flight).
  const hostPromiseId = object => natives.hostPromiseId(object);
  // QuickJS hashes a number by its float64 bits, and a small integer's
  // leave the low bits of the bucket index zero, so maps keyed by import
  // id degrade to long chains as they grow. `2 ** 52 + id` holds the id
  // itself in the low bits: consecutive ids fall in distinct buckets.
  // (QuickJS does not fold `2 ** 52`: computed once, not per key.)
  const ID_KEY_BASE = 2 ** 52;
  const idKey = importId => ID_KEY_BASE + importId;
  // Presences are held weakly, so that QuickJS can collect one guest code
  // no longer holds:
  // import id key -> WeakRef of its object. The ids of collected ones wait in
  // `collectedImports` until the engine takes them and lets the host
  // reference go (`takeCollectedImports`). Captured before lockdown
  // removes these from the globals.
  const WeakRefCtor = WeakRef;
  const liveImports = new Map();
  let collectedImports = [];
  const importRegistry = new FinalizationRegistry(importId => {
    liveImports.delete(idKey(importId));
    collectedImports.push(importId);
  });

  const isObject = value =>
    (typeof value === 'object' && value !== null) || typeof value === 'function';

  // ---- harden ---------------------------------------------------------

  const harden = root => {
    if (!isObject(root) || hardened.has(root)) {
      return root;
    }
    const queue = [root];
    const visited = new Set();
    while (queue.length > 0) {
      const value = queue.pop();
      if (!isObject(value) || hardened.has(value) || visited.has(value)) {
        continue;
      }
      visited.add(value);
      if (isView(value) && objectToString.call(value) !== '[object DataView]') {
        // Typed array elements cannot be frozen; Endo leaves them mutable.
        preventExtensions(value);
      } else {
        freeze(value);
      }
      queue.push(getPrototypeOf(value));
      const descriptors = getOwnPropertyDescriptors(value);
      for (const key of ownKeys(descriptors)) {
        const descriptor = descriptors[key];
        if ('value' in descriptor) {
          queue.push(descriptor.value);
        } else {
          queue.push(descriptor.get, descriptor.set);
        }
      }
    }
    for (const value of visited) {
      hardened.add(value);
    }
    return root;
  };

  // ---- quoting for messages (Endo's debug-mode `q`) --------------------

  const isErrorLike = value => objectToString.call(value) === '[object Error]';

  const tagOf = value => {
    try {
      const tag = value[toStringTag];
      return typeof tag === 'string' ? tag : undefined;
    } catch {
      return undefined;
    }
  };

  const q = payload => {
    const seen = new Set();
    const replacer = function (_key, value) {
      switch (typeof value) {
        case 'undefined':
          return '[undefined]';
        case 'bigint':
          return `[${value}n]`;
        case 'symbol':
          return `[${String(value)}]`;
        case 'number':
          return Number.isFinite(value) ? value : `[${value}]`;
        case 'string':
          return value.startsWith('[') ? `[${value}]` : value;
        case 'function':
          return `[Function ${value.name || '<anon>'}]`;
        case 'object': {
          if (value === null) {
            return null;
          }
          if (seen.has(value)) {
            return '[Seen]';
          }
          seen.add(value);
          if (isErrorLike(value)) {
            return `[${value.name}: ${value.message}]`;
          }
          if (isArray(value)) {
            return value;
          }
          const tag = tagOf(value);
          return tag === undefined ? value : `[${tag}]`;
        }
        default:
          return value;
      }
    };
    try {
      return stringify(payload, replacer);
    } catch {
      return '"[?]"';
    }
  };

  // ---- classification for the Rust converter --------------------------

  const nonFrozen = value => Error(`Cannot pass non-frozen objects like ${q(value)}. Use harden()`);

  // Kinds the Rust side has already told apart with native checks.
  const HINT_OBJECT = 0;
  const HINT_ARRAY = 1;
  const HINT_ERROR = 2;
  const HINT_PROMISE = 3;
  const HINT_BYTES = 4;
  const HINT_FUNCTION = 5;

  const dataDescriptor = (object, key, descriptor) => {
    if (!('value' in descriptor)) {
      throw Error(`${q(String(key))} must not be an accessor property: ${q(object)}`);
    }
    return descriptor.value;
  };

  // Returns [style, ...parts]; throws Endo's message for what is not
  // passable. Array elements and record values are read by Rust.
  const classify = (value, hint) => {
    if (!isFrozen(value)) {
      if (isView(value)) {
        throw Error(`Cannot pass mutable typed arrays like ${q(value)}.`);
      }
      throw nonFrozen(value);
    }
    switch (hint) {
      case HINT_PROMISE:
        // Host promises the engine recognized before asking.
        return ['promise'];
      case HINT_BYTES:
        return ['byteArray'];
      case HINT_ARRAY: {
        if (!arrayProtos.has(getPrototypeOf(value))) {
          throw Error(`Malformed array: ${q(value)}`);
        }
        const descriptors = getOwnPropertyDescriptors(value);
        const length = value.length;
        for (let index = 0; index < length; index += 1) {
          const descriptor = descriptors[index];
          if (descriptor === undefined) {
            throw Error(`${index} property expected: ${q(value)}`);
          }
          dataDescriptor(value, index, descriptor);
        }
        if (ownKeys(descriptors).length !== length + 1) {
          throw Error(`Arrays must not have non-indexes: ${q(value)}`);
        }
        return ['copyArray', length];
      }
      case HINT_ERROR: {
        const descriptors = getOwnPropertyDescriptors(value);
        for (const key of ownKeys(descriptors)) {
          if (key !== 'message' && key !== 'stack' && key !== 'cause' && key !== 'errors') {
            throw Error(`Passable Error has extra unpassed properties ${q({ [String(key)]: true })}`);
          }
        }
        const name = value.name;
        const message = descriptors.message ? dataDescriptor(value, 'message', descriptors.message) : '';
        const hasCause = descriptors.cause !== undefined;
        const cause = hasCause ? dataDescriptor(value, 'cause', descriptors.cause) : undefined;
        const errors = descriptors.errors ? dataDescriptor(value, 'errors', descriptors.errors) : undefined;
        return ['error', String(name), String(message), hasCause, cause, errors];
      }
      default:
        break;
    }
    const brand = remotables.get(value);
    if (brand !== undefined) {
      return ['remotable', brand.iface, brand.importId];
    }
    if (hint === HINT_FUNCTION) {
      throw Error(`Remotables must be explicitly declared: ${q(value)}`);
    }
    const proto = getPrototypeOf(value);
    if (!plainProtos.has(proto)) {
      if (proto === null) {
        throw Error(`Remotables must be explicitly declared: ${q(value)}`);
      }
      throw Error(`"[Symbol(passStyle)]" property expected: ${q(value)}`);
    }
    const descriptors = getOwnPropertyDescriptors(value);
    const keys = ownKeys(descriptors);
    if (PASS_STYLE in descriptors) {
      const style = dataDescriptor(value, PASS_STYLE, descriptors[PASS_STYLE]);
      if (style !== 'tagged') {
        throw Error(`Unrecognized PassStyle: ${q(style)}`);
      }
      const tag = descriptors[toStringTag] && dataDescriptor(value, toStringTag, descriptors[toStringTag]);
      if (typeof tag !== 'string' || !descriptors.payload || keys.length !== 3) {
        throw Error(`Malformed tagged: ${q(value)}`);
      }
      return ['tagged', tag, dataDescriptor(value, 'payload', descriptors.payload)];
    }
    for (const key of keys) {
      if (typeof key !== 'string') {
        throw Error(`cannot serialize Remotables with non-methods like ${q(String(key))} in ${q(value)}`);
      }
      const descriptor = descriptors[key];
      const member = dataDescriptor(value, key, descriptor);
      if (!descriptor.enumerable) {
        throw Error(`${q(key)} must be an enumerable property: ${q(value)}`);
      }
      if (typeof member === 'function') {
        throw Error(`Remotables must be explicitly declared: ${q(value)}`);
      }
    }
    return ['copyRecord', keys];
  };

  // ---- building values for the Rust converter -------------------------

  const makeTaggedRaw = (tag, payload) =>
    freeze(
      create(Object.prototype, {
        [PASS_STYLE]: { value: 'tagged' },
        [toStringTag]: { value: tag },
        payload: { value: payload, enumerable: true },
      }),
    );

  const errorConstructors = freeze({
    Error,
    EvalError,
    RangeError,
    ReferenceError,
    SyntaxError,
    TypeError,
    URIError,
    AggregateError,
  });

  const makeError = (name, message, cause, hasCause, errors) => {
    const Ctor = Object.prototype.hasOwnProperty.call(errorConstructors, name) ? errorConstructors[name] : Error;
    const options = hasCause ? { cause } : undefined;
    const error = Ctor === AggregateError ? new Ctor(errors ?? [], message, options) : new Ctor(message, options);
    if (errors !== undefined) {
      defineProperty(error, 'errors', { value: errors, writable: true, configurable: true });
    }
    if (Ctor === Error && name !== 'Error') {
      defineProperty(error, 'name', { value: name, writable: true, configurable: true });
    }
    return harden(error);
  };

  const wellKnownSymbolNames = [
    'asyncIterator', 'hasInstance', 'isConcatSpreadable', 'iterator', 'match', 'matchAll', 'replace', 'search',
    'species', 'split', 'toPrimitive', 'toStringTag', 'unscopables',
  ];
  const symbolName = symbol => {
    const registered = Symbol.keyFor(symbol);
    if (registered !== undefined) {
      return registered.startsWith('@@') ? `@@${registered}` : registered;
    }
    for (const name of wellKnownSymbolNames) {
      if (Symbol[name] === symbol) {
        return `@@${name}`;
      }
    }
    throw Error(`Only registered symbols or well-known symbols are passable: ${q(symbol)}`);
  };
  const symbolFor = (registeredName, wellKnown) => (wellKnown ? Symbol[registeredName] : Symbol.for(registeredName));
  const bigintFrom = text => BigInt(text);

  // ---- presences and promises of the host -----------------------------

  const makePresence = (importId, iface) => {
    const proto = freeze(create(Object.prototype, { [toStringTag]: { value: iface } }));
    const presence = freeze(create(proto));
    hardened.add(proto);
    hardened.add(presence);
    remotables.set(presence, freeze({ iface, importId }));
    trackImport(importId, presence);
    return presence;
  };

  const trackImport = (importId, object) => {
    liveImports.set(idKey(importId), new WeakRefCtor(object));
    importRegistry.register(object, importId);
  };

  // The object standing for an import, if QuickJS has not collected it.
  const lookupImport = importId => liveImports.get(idKey(importId))?.deref();

  const takeCollectedImports = () => {
    const ids = collectedImports;
    collectedImports = [];
    return ids;
  };

  // The realm whose promises stand for host promises: a vat's own (see
  // `adoptHostPromiseRealm`), else the latest evaluation's while it lives
  // (`adoptEvaluationRealm`), else this one.
  let vatPromiseCtor;
  let evaluationPromiseRef;
  // That realm's `Function.prototype.call`, through which the engine
  // calls a host promise's resolver: a promise's reactions run as jobs of
  // the realm that settled it, and an `await` resumed by such a job wraps
  // the next promise it awaits unless that job's realm made it. Settled
  // from this library's realm, every `await` of a host promise would cost
  // one more promise and job.
  let vatCall;
  let evaluationCallRef;
  // A vat worker runs one vat program: its host promises are made with
  // the vat compartment's `Promise`, so that `await` and `Promise.all` in
  // the vat take them as they are instead of wrapping each in one more
  // promise and job, as they do for another realm's promises.
  const adoptHostPromiseRealm = PromiseOfRealm => {
    vatPromiseCtor = PromiseOfRealm;
    vatCall = getPrototypeOf(PromiseOfRealm).call;
  };
  // A worker evaluates in a fresh compartment each time; the one that
  // runs now is the likeliest to await what it sends. Held weakly, so an
  // evaluation that is over does not keep its realm alive; a promise made
  // for an older compartment's send is only wrapped once more, as before.
  const adoptEvaluationRealm = PromiseOfRealm => {
    if (vatPromiseCtor === undefined) {
      evaluationPromiseRef = new WeakRefCtor(PromiseOfRealm);
      evaluationCallRef = new WeakRefCtor(getPrototypeOf(PromiseOfRealm).call);
    }
  };
  const hostPromiseCtor = () => vatPromiseCtor ?? evaluationPromiseRef?.deref() ?? PromiseCtor;
  const hostRealmCall = () => vatCall ?? evaluationCallRef?.deref();

  // `{ promise, resolve, reject }` of a new host promise, which the engine
  // holds (and settles) until it settles. The realm's own `withResolvers`
  // (frozen by lockdown): no executor closure and no array per promise.
  const makeHostPromise = () => {
    const pending = hostPromiseCtor().withResolvers();
    freeze(pending.promise);
    return pending;
  };

  const watchPromise = (promise, exportId) => {
    promiseThen(
      promise,
      value => natives.exportSettled(exportId, true, value),
      reason => natives.exportSettled(exportId, false, reason),
    );
  };

  // The import id of the object standing for a host reference (a
  // presence or a host promise); undefined for anything else.
  const hostImportId = value => {
    if (!isObject(value)) {
      return undefined;
    }
    const remotable = remotables.get(value);
    return remotable === undefined ? hostPromiseId(value) : remotable.importId;
  };
  const isHostTarget = value => hostImportId(value) !== undefined;

  // ---- eventual send ---------------------------------------------------

  const methodNamesOf = target => {
    const names = new Set();
    let object = target;
    while (isObject(object) && !plainProtos.has(object)) {
      for (const key of ownKeys(object)) {
        if (typeof key === 'string' && typeof object[key] === 'function') {
          names.add(key);
        }
      }
      object = getPrototypeOf(object);
    }
    return [...names].sort();
  };

  const localSend = (target, method, args) => {
    if (method === undefined) {
      if (typeof target !== 'function') {
        throw TypeError(`Cannot invoke target as a function; typeof target is ${q(typeof target)}`);
      }
      return apply(target, undefined, args);
    }
    if (target === undefined || target === null) {
      throw TypeError(`Cannot deliver ${q(method)} to target; typeof target is ${q(typeof target)}`);
    }
    const fn = target[method];
    if (fn === undefined) {
      throw TypeError(`target has no method ${q(method)}, has ${q(methodNamesOf(target))}`);
    }
    if (typeof fn !== 'function') {
      throw Error(`invoked method ${q(method)} is not a function; it is a ${q(typeof fn)}`);
    }
    return apply(fn, target, args);
  };

  const localGet = (target, property) => {
    if (target === undefined || target === null) {
      throw TypeError(`Cannot get ${q(property)} of target; typeof target is ${q(typeof target)}`);
    }
    return target[property];
  };

  // Sends to host references go out at once (pipelining); sends to local
  // objects run in a later turn, in the order they were made.
  const eventualSend = (target, method, args, wantsResult) => {
    // The host is told the target by import id: no conversion per send.
    const importId = hostImportId(target);
    if (importId !== undefined) {
      return natives.hostSend(importId, method, args, wantsResult);
    }
    const result = promiseThen(resolvePromise(target), resolved => {
      const resolvedId = hostImportId(resolved);
      return resolvedId !== undefined
        ? natives.hostSend(resolvedId, method, args, true)
        : localSend(resolved, method, args);
    });
    if (!wantsResult) {
      promiseThen(result, undefined, () => {});
      return undefined;
    }
    return result;
  };

  const eventualGet = (target, property) => {
    if (isHostTarget(target)) {
      return natives.hostGet(target, property);
    }
    return promiseThen(resolvePromise(target), resolved =>
      isHostTarget(resolved) ? natives.hostGet(resolved, property) : localGet(resolved, property),
    );
  };

  // Each proxy's target is a fresh function returning what it stands for:
  // the traps are shared, so `E(x)` makes two objects, not four. Like a
  // frozen object, the proxy takes no new properties; freezing it first
  // deletes the target's own `name` and `length`, which frozen would bind
  // the proxy's `get` (so `E(x).name()` would throw).
  const propertyName = property => (typeof property === 'string' && property !== 'then' ? property : undefined);
  const inertTraps = {
    defineProperty: () => false,
    set: () => false,
    preventExtensions: box => {
      delete box.name;
      delete box.length;
      preventExtensions(box);
      return true;
    },
  };
  const makeSendHandler = wantsResult =>
    freeze({
      ...inertTraps,
      get: (box, property) => {
        const method = propertyName(property);
        if (method === undefined) {
          return undefined;
        }
        const target = box();
        return (...args) => eventualSend(target, method, args, wantsResult);
      },
      apply: (box, _this, args) => eventualSend(box(), undefined, args, wantsResult),
    });
  const sendHandler = makeSendHandler(true);
  const sendOnlyHandler = makeSendHandler(false);
  const getHandler = freeze({
    ...inertTraps,
    get: (box, property) => {
      const name = propertyName(property);
      return name === undefined ? undefined : eventualGet(box(), name);
    },
  });

  const E = target => new ProxyCtor(() => target, sendHandler);
  E.get = target => new ProxyCtor(() => target, getHandler);
  E.sendOnly = target => new ProxyCtor(() => target, sendOnlyHandler);
  E.when = (value, onFulfilled, onRejected) => promiseThen(resolvePromise(value), onFulfilled, onRejected);
  E.resolve = value => resolvePromise(value);

  // ---- Far and exos ----------------------------------------------------

  const methodNamesValue = names => harden([...names].sort());

  const Far = (farName, remotable = {}) => {
    if (typeof farName !== 'string') {
      throw TypeError(`Far name must be a string: ${q(farName)}`);
    }
    if (!isObject(remotable)) {
      throw TypeError(`Cannot make a remotable of ${q(remotable)}`);
    }
    if (isFrozen(remotable) || remotables.has(remotable)) {
      throw TypeError(`Remotable ${q(remotable)} is already frozen`);
    }
    const names = [];
    for (const key of ownKeys(remotable)) {
      const member = remotable[key];
      if (typeof remotable !== 'function' && typeof member !== 'function') {
        throw Error(`cannot serialize Remotables with non-methods like ${q(String(key))} in ${q(remotable)}`);
      }
      if (typeof key === 'string') {
        names.push(key);
      }
    }
    const iface = `Alleged: ${farName}`;
    const proto = create(getPrototypeOf(remotable), {
      [toStringTag]: { value: iface },
      __getMethodNames__: {
        value: {
          __getMethodNames__() {
            return methodNamesValue([...names, '__getMethodNames__']);
          },
        }.__getMethodNames__,
      },
    });
    setPrototypeOf(remotable, proto);
    harden(remotable);
    remotables.set(remotable, freeze({ iface }));
    return remotable;
  };

  const ownMethodNames = methods => {
    if (!isObject(methods)) {
      throw TypeError(`Methods must be an object: ${q(methods)}`);
    }
    const names = [];
    for (const key of ownKeys(methods)) {
      if (typeof key !== 'string') {
        throw TypeError(`Symbol-named methods are not supported: ${q(String(key))}`);
      }
      if (typeof methods[key] !== 'function') {
        throw TypeError(`Method ${q(key)} must be a function, not ${q(typeof methods[key])}`);
      }
      names.push(key);
    }
    return names;
  };

  // The prototype of one exo class (or one facet of a kit): a guarded
  // wrapper per method, checked by Rust before and after the behavior runs.
  const makeExoPrototype = (tag, classInfo, methods, names, interfaceGuard, contextMap) => {
    const [classId, asyncMethods] = classInfo;
    const getContext = (self, name) => {
      const context = contextMap.get(self);
      if (context === undefined) {
        throw TypeError(`${q(`In ${q(name)} method of (${tag})`)} may only be applied to a valid instance: ${q(self)}`);
      }
      return context;
    };
    const proto = create(Object.prototype, { [toStringTag]: { value: `Alleged: ${tag}` } });
    for (const name of names) {
      const behavior = methods[name];
      const awaitIndexes = asyncMethods[name];
      let method;
      if (awaitIndexes === undefined) {
        method = {
          [name](...args) {
            const context = getContext(this, name);
            natives.checkArgs(classId, name, args);
            const result = apply(behavior, context, args);
            natives.checkResult(classId, name, result);
            return result;
          },
        }[name];
      } else {
        method = {
          [name](...args) {
            const self = this;
            const awaited = [];
            for (const index of awaitIndexes) {
              if (index < args.length) {
                awaited.push(args[index]);
              }
            }
            const resultP = promiseThen(PromiseCtor.all(awaited), values => {
              values.forEach((value, position) => {
                args[awaitIndexes[position]] = value;
              });
              const context = getContext(self, name);
              natives.checkArgs(classId, name, args);
              return apply(behavior, context, args);
            });
            return promiseThen(resultP, fulfillment => {
              natives.checkResult(classId, name, fulfillment);
              return fulfillment;
            });
          },
        }[name];
      }
      defineProperty(method, 'length', { value: behavior.length });
      defineProperty(proto, name, { value: method, writable: true, enumerable: false, configurable: true });
    }
    const allNames = [...names];
    if (!names.includes('__getInterfaceGuard__')) {
      defineProperty(proto, '__getInterfaceGuard__', {
        value: { __getInterfaceGuard__: () => interfaceGuard }.__getInterfaceGuard__,
      });
      allNames.push('__getInterfaceGuard__');
    }
    if (!names.includes('__getMethodNames__')) {
      allNames.push('__getMethodNames__');
      defineProperty(proto, '__getMethodNames__', {
        value: { __getMethodNames__: () => methodNamesValue(allNames) }.__getMethodNames__,
      });
    }
    return harden(proto);
  };

  // For deliveries from Rust: the class, behaviors and context of an exo.
  const exoDispatch = new WeakMap();

  const makeSelf = (proto, tag, classId, methods, context) => {
    const self = freeze(create(proto));
    hardened.add(self);
    remotables.set(self, freeze({ iface: `Alleged: ${tag}` }));
    exoDispatch.set(self, [classId, methods, context]);
    return self;
  };

  const defineExoClass = (tag, interfaceGuard, init, methods, options = undefined) => {
    if (typeof tag !== 'string') {
      throw TypeError(`Exo tag must be a string: ${q(tag)}`);
    }
    harden(methods);
    const names = ownMethodNames(methods);
    const classInfo = natives.defineExo(tag, interfaceGuard, names);
    const contextMap = new WeakMap();
    const proto = makeExoPrototype(tag, classInfo, methods, names, interfaceGuard, contextMap);
    const finish = options?.finish;
    return harden((...args) => {
      const state = seal(init(...args));
      const context = { state, self: undefined };
      const self = makeSelf(proto, tag, classInfo[0], methods, context);
      context.self = self;
      freeze(context);
      contextMap.set(self, context);
      if (finish) {
        finish(context);
      }
      return self;
    });
  };

  const initEmpty = () => ({});
  const makeExo = (tag, interfaceGuard, methods, options = undefined) =>
    defineExoClass(tag, interfaceGuard, initEmpty, methods, options)();

  const defineExoClassKit = (tag, interfaceGuardKit, init, methodsKit, options = undefined) => {
    if (typeof tag !== 'string') {
      throw TypeError(`Exo tag must be a string: ${q(tag)}`);
    }
    harden(methodsKit);
    const facetNames = ownKeys(methodsKit).filter(key => typeof key === 'string');
    const facetSpecs = facetNames.map(facet => [facet, ownMethodNames(methodsKit[facet])]);
    const classInfos = natives.defineExoKit(tag, interfaceGuardKit, facetSpecs);
    const contextMaps = {};
    const protos = {};
    for (const [facet, names] of facetSpecs) {
      contextMaps[facet] = new WeakMap();
      const facetGuard = interfaceGuardKit === undefined ? undefined : interfaceGuardKit[facet];
      protos[facet] = makeExoPrototype(
        `${tag} ${facet}`,
        classInfos[facet],
        methodsKit[facet],
        names,
        facetGuard,
        contextMaps[facet],
      );
    }
    const finish = options?.finish;
    return harden((...args) => {
      const state = seal(init(...args));
      const context = { state, facets: undefined };
      const facets = {};
      for (const [facet] of facetSpecs) {
        facets[facet] = makeSelf(protos[facet], `${tag} ${facet}`, classInfos[facet][0], methodsKit[facet], context);
        contextMaps[facet].set(facets[facet], context);
      }
      context.facets = freeze(facets);
      freeze(context);
      if (finish) {
        finish(context);
      }
      return context.facets;
    });
  };

  const exoInfo = target => exoDispatch.get(target);

  // A delivery from the host to a local object: run it now (this is the
  // delivery's own turn).
  const deliverLocal = (target, method, args, isPromise) =>
    isPromise ? eventualSend(target, method, args, true) : localSend(target, method, args);
  const deliverGet = (target, property, isPromise) =>
    isPromise ? eventualGet(target, property) : localGet(target, property);

  // ---- M, matching, collections -----------------------------------------

  const pattern = (name, ...args) => natives.pattern(name, args);

  const makeMethodGuardMaker = (callKind, argGuards, optionalArgGuards, restArgGuard) =>
    freeze({
      optional: (...optionals) => {
        if (optionalArgGuards !== undefined) {
          throw Error('Can only have one set of optional guards');
        }
        if (restArgGuard !== undefined) {
          throw Error('optional arg guards must come before rest arg');
        }
        return makeMethodGuardMaker(callKind, argGuards, optionals, undefined);
      },
      rest: rest => {
        if (restArgGuard !== undefined) {
          throw Error('Can only have one rest arg');
        }
        return makeMethodGuardMaker(callKind, argGuards, optionalArgGuards, rest);
      },
      returns: (returnGuard = pattern('undefined')) =>
        natives.pattern('methodGuard', [callKind, argGuards, optionalArgGuards, restArgGuard, returnGuard]),
    });

  const M = {
    any: () => pattern('any'),
    and: (...patterns) => pattern('and', ...patterns),
    or: (...patterns) => pattern('or', ...patterns),
    not: subPattern => pattern('not', subPattern),
    scalar: () => pattern('scalar'),
    key: () => pattern('key'),
    pattern: () => pattern('pattern'),
    kind: kind => pattern('kind', kind),
    tagged: (...args) => pattern('tagged', ...args),
    boolean: () => pattern('boolean'),
    number: () => pattern('number'),
    bigint: (...args) => pattern('bigint', ...args),
    nat: (...args) => pattern('nat', ...args),
    string: (...args) => pattern('string', ...args),
    symbol: (...args) => pattern('symbol', ...args),
    record: (...args) => pattern('record', ...args),
    array: (...args) => pattern('array', ...args),
    set: (...args) => pattern('set', ...args),
    bag: (...args) => pattern('bag', ...args),
    map: (...args) => pattern('map', ...args),
    byteArray: (...args) => pattern('byteArray', ...args),
    remotable: (...args) => pattern('remotable', ...args),
    error: () => pattern('error'),
    promise: (...args) => pattern('promise', ...args),
    undefined: () => pattern('undefined'),
    null: () => pattern('null'),
    lt: key => pattern('lt', key),
    lte: key => pattern('lte', key),
    eq: key => pattern('eq', key),
    neq: key => pattern('neq', key),
    gte: key => pattern('gte', key),
    gt: key => pattern('gt', key),
    arrayOf: (...args) => pattern('arrayOf', ...args),
    recordOf: (...args) => pattern('recordOf', ...args),
    setOf: (...args) => pattern('setOf', ...args),
    bagOf: (...args) => pattern('bagOf', ...args),
    mapOf: (...args) => pattern('mapOf', ...args),
    containerHas: (...args) => pattern('containerHas', ...args),
    splitArray: (...args) => pattern('splitArray', ...args),
    splitRecord: (...args) => pattern('splitRecord', ...args),
    opt: subPattern => pattern('opt', subPattern),
    eref: subPattern => pattern('eref', subPattern),
    interface: (interfaceName, methodGuards, options = undefined) =>
      pattern('interface', interfaceName, methodGuards, options),
    call: (...argGuards) => makeMethodGuardMaker('sync', argGuards, undefined, undefined),
    callWhen: (...argGuards) => makeMethodGuardMaker('async', argGuards, undefined, undefined),
    await: argGuard => pattern('await', argGuard),
    raw: () => pattern('raw'),
  };

  const makeTagged = (tag, payload) => natives.makeTagged(tag, payload);
  const toArray = (iterable, what) => {
    if (!isObject(iterable)) {
      throw TypeError(`${what} must be iterable: ${q(iterable)}`);
    }
    return harden([...iterable]);
  };
  const makeCopySet = (elements = []) => natives.makeCopySet(toArray(elements, 'Set elements'));
  const makeCopyBag = (entries = []) => natives.makeCopyBag(toArray(entries, 'Bag entries'));
  const makeCopyMap = (entries = []) => natives.makeCopyMap(toArray(entries, 'Map entries'));
  const matches = (specimen, patt) => natives.matches(specimen, harden(patt));
  // Patterns are written as literals; Endo's are hardened by `M`.
  const mustMatch = (specimen, patt, label = undefined) => {
    natives.mustMatch(specimen, harden(patt), label);
  };
  const passStyleOf = value => natives.passStyleOf(value);

  // ---- vats: makeDefaultExo, baggage, buildRootObject --------------------

  // An exo whose methods take and return any passables (MetaMask's
  // kernel-utils default), unless an interface guard is given.
  const makeDefaultExo = (name, methods, interfaceGuard = undefined) =>
    makeExo(
      name,
      interfaceGuard === undefined ? M.interface(name, {}, { defaultGuards: 'passable' }) : interfaceGuard,
      methods,
    );

  // The baggage of a vat: a map store of string keys to passables, worded
  // as Endo's map stores. Each write is also sent, send-only and in order,
  // to `store`, which keeps it durably.
  const makeBaggage = (entries, store) => {
    const label = 'baggage';
    const values = new Map();
    for (const [key, value] of entries) {
      values.set(key, value);
    }
    const assertKey = key => {
      if (typeof key !== 'string') {
        throw TypeError(`keys of collection ${q(label)} must be strings, not ${q(key)}`);
      }
    };
    const assertPresent = key => {
      assertKey(key);
      if (!values.has(key)) {
        throw Error(`key ${q(key)} not found in collection ${q(label)}`);
      }
    };
    // Promises cannot outlive the vat, so durable baggage refuses them.
    const holdsPromise = (value, depth) => {
      const style = natives.passStyleOf(value);
      if (style === 'promise') return true;
      if (depth > 64) return false;
      if (style === 'copyArray') return value.some(item => holdsPromise(item, depth + 1));
      if (style === 'copyRecord') return Object.values(value).some(item => holdsPromise(item, depth + 1));
      if (style === 'tagged') return holdsPromise(value.payload, depth + 1);
      return false;
    };
    const passable = value => {
      harden(value);
      natives.passStyleOf(value);
      if (holdsPromise(value, 0)) {
        throw TypeError(`a value in collection ${q(label)} must not hold a promise`);
      }
      return value;
    };
    const record = (method, args) => {
      eventualSend(store, method, harden(args), false);
    };
    return harden({
      has(key) {
        assertKey(key);
        return values.has(key);
      },
      get(key) {
        assertPresent(key);
        return values.get(key);
      },
      init(key, value) {
        assertKey(key);
        if (values.has(key)) {
          throw Error(`key ${q(key)} already registered in collection ${q(label)}`);
        }
        passable(value);
        values.set(key, value);
        record('init', [key, value]);
      },
      set(key, value) {
        assertPresent(key);
        passable(value);
        values.set(key, value);
        record('set', [key, value]);
      },
      delete(key) {
        assertPresent(key);
        values.delete(key);
        record('delete', [key]);
      },
      keys() {
        return harden([...values.keys()].sort());
      },
    });
  };

  const buildFailure = reason => {
    const message = isObject(reason) && isErrorLike(reason) ? reason.message : q(reason);
    return harden(Error(`buildRootObject failed: ${message}`));
  };

  // Runs a vat program whose module evaluated to `namespace` (or threw
  // `moduleError`): builds its root object with a fresh baggage.
  const buildVat = (namespace, threw, moduleError, parameters, entries, store, powers) => {
    if (threw) {
      throw buildFailure(moduleError);
    }
    const build = namespace.buildRootObject;
    if (typeof build !== 'function') {
      throw harden(Error('buildRootObject failed: the vat program does not export buildRootObject'));
    }
    const baggage = makeBaggage(entries, store);
    let result;
    try {
      result = build(powers, parameters, baggage);
    } catch (error) {
      throw buildFailure(error);
    }
    return promiseThen(
      resolvePromise(result),
      root => {
        if (!isObject(root) || remotables.get(root) === undefined) {
          throw harden(TypeError(`buildRootObject must return a remotable root object, not ${q(root)}`));
        }
        return root;
      },
      error => {
        throw buildFailure(error);
      },
    );
  };

  // ---- assert and console ----------------------------------------------

  const detailsText = details => (typeof details === 'string' ? details : String(details));
  const details = (template, ...substitutions) => {
    let text = template[0];
    substitutions.forEach((substitution, index) => {
      text += q(substitution) + template[index + 1];
    });
    return text;
  };
  const assert = (flag, optDetails = 'Check failed', ErrorCtor = Error) => {
    if (!flag) {
      throw ErrorCtor(detailsText(optDetails));
    }
  };
  assert.fail = (optDetails = 'Assert failed', ErrorCtor = Error) => {
    throw ErrorCtor(detailsText(optDetails));
  };
  assert.equal = (actual, expected, optDetails = undefined, ErrorCtor = Error) => {
    if (!Object.is(actual, expected)) {
      throw ErrorCtor(optDetails === undefined ? `Expected ${q(actual)} is same as ${q(expected)}` : detailsText(optDetails));
    }
  };
  assert.typeof = (specimen, typeName, optDetails = undefined) => {
    if (typeof specimen !== typeName) {
      throw TypeError(optDetails === undefined ? `${q(specimen)} must be ${/^[aeiou]/.test(typeName) ? 'an' : 'a'} ${typeName}` : detailsText(optDetails));
    }
  };
  assert.string = (specimen, optDetails = undefined) => assert.typeof(specimen, 'string', optDetails);
  assert.error = (optDetails = 'Assert failed', ErrorCtor = Error) => ErrorCtor(detailsText(optDetails));
  assert.note = () => {};
  assert.details = details;
  assert.quote = q;
  assert.Fail = (template, ...substitutions) => {
    throw Error(details(template, ...substitutions));
  };

  const formatLogArgument = value => {
    if (typeof value === 'string') {
      return value;
    }
    if (isObject(value) && isErrorLike(value)) {
      return `${value.name}: ${value.message}`;
    }
    if (isObject(value)) {
      return q(value);
    }
    return typeof value === 'bigint' ? `${value}n` : String(value);
  };
  const logger = level => (...args) => {
    natives.log(level, args.map(formatLogArgument).join(' '));
  };
  const console = {
    debug: logger('debug'),
    log: logger('log'),
    info: logger('info'),
    warn: logger('warn'),
    error: logger('error'),
  };

  // ---- compartments -------------------------------------------------------

  // ECMAScript globals a compartment keeps; QuickJS extras (timers,
  // shared memory, GC observation, host shims) are removed.
  const keptGlobals = new Set([
    'Object', 'Function', 'Error', 'EvalError', 'RangeError', 'ReferenceError', 'SyntaxError', 'TypeError',
    'URIError', 'AggregateError', 'SuppressedError', 'Iterator', 'Array', 'parseInt', 'parseFloat', 'isNaN',
    'isFinite', 'decodeURI', 'decodeURIComponent', 'encodeURI', 'encodeURIComponent', 'escape', 'unescape',
    'Infinity', 'NaN', 'undefined', 'eval', 'Number', 'Boolean', 'String', 'Math', 'Reflect', 'Symbol',
    'DisposableStack', 'AsyncDisposableStack', 'globalThis', 'BigInt', 'Date', 'RegExp', 'JSON', 'Proxy', 'Map',
    'Set', 'WeakMap', 'WeakSet', 'ArrayBuffer', 'Uint8ClampedArray', 'Int8Array', 'Uint8Array', 'Int16Array',
    'Uint16Array', 'Int32Array', 'Uint32Array', 'BigInt64Array', 'BigUint64Array', 'Float16Array',
    'Float32Array', 'Float64Array', 'DataView', 'Promise',
  ]);

  const inertConstructor = freeze(
    {
      constructor() {
        throw TypeError('Function constructors are not available through .constructor in a compartment');
      },
    }.constructor,
  );

  const guestGlobals = {
    E, Far, makeExo, defineExoClass, defineExoClassKit, M, matches, mustMatch, harden, passStyleOf, makeTagged,
    makeCopySet, makeCopyBag, makeCopyMap, assert, console, makeDefaultExo,
  };

  // Tames and freezes a fresh realm, keeps only the standard globals, and
  // installs the guest globals. `hidden` lists intrinsics not reachable
  // from the global object; `strictEval`/`StrictFunction` replace `eval`
  // and `Function` so that no sloppy code (whose `this` is the global)
  // can be made.
  // SES's taming of a vat's clock and randomness: `Date` without a clock
  // (`Date.now()` is NaN, `new Date()` an invalid date, `Date()` the text
  // 'Invalid Date'), and a `Math.random` that throws. Granting the vat
  // globals "Date" or "Math" leaves the real ones.
  const tameDate = global => {
    const RealDate = global.Date;
    const Date = function Date(...args) {
      if (new.target === undefined) {
        return 'Invalid Date';
      }
      return Reflect.construct(RealDate, args.length === 0 ? [NaN] : args, new.target);
    };
    defineProperty(Date, 'prototype', { value: RealDate.prototype, writable: false, configurable: false });
    defineProperty(Date, 'now', { value: freeze(() => NaN), writable: true, configurable: true });
    defineProperty(Date, 'parse', { value: RealDate.parse, writable: true, configurable: true });
    defineProperty(Date, 'UTC', { value: RealDate.UTC, writable: true, configurable: true });
    defineProperty(RealDate.prototype, 'constructor', { value: Date, writable: true, configurable: true });
    defineProperty(global, 'Date', { value: Date, writable: true, configurable: true });
    return RealDate;
  };
  const tameRandom = global => {
    const random = () => {
      throw TypeError('Math.random is not available in this vat: ask for the "Math" global');
    };
    defineProperty(global.Math, 'random', { value: random, writable: true, configurable: true });
  };

  const lockdownRealm = (global, hidden, strictEval, StrictFunction, tameClock, tameRandomness) => {
    const tamed = [];
    if (tameClock) {
      tamed.push(tameDate(global));
    }
    if (tameRandomness) {
      tameRandom(global);
    }
    const [FunctionPrototype, AsyncFunctionPrototype, GeneratorFunctionPrototype, AsyncGeneratorFunctionPrototype] =
      hidden;
    for (const prototype of [
      FunctionPrototype,
      AsyncFunctionPrototype,
      GeneratorFunctionPrototype,
      AsyncGeneratorFunctionPrototype,
    ]) {
      defineProperty(prototype, 'constructor', { value: inertConstructor, writable: false, configurable: false });
    }
    defineProperty(StrictFunction, 'prototype', { value: FunctionPrototype });
    const roots = [...hidden, ...tamed];
    for (const name of ownKeys(global)) {
      const descriptor = Reflect.getOwnPropertyDescriptor(global, name);
      if (name === 'globalThis') {
        continue;
      }
      roots.push(descriptor.value, descriptor.get, descriptor.set);
      if (!keptGlobals.has(name)) {
        delete global[name];
      }
    }
    defineProperty(global, 'eval', { value: strictEval, writable: true, configurable: true });
    defineProperty(global, 'Function', { value: StrictFunction, writable: true, configurable: true });
    roots.push(strictEval, StrictFunction, guestGlobals, api);
    plainProtos.add(global.Object.prototype);
    arrayProtos.add(global.Array.prototype);
    harden(roots);
    for (const name of ownKeys(guestGlobals)) {
      defineProperty(global, name, { value: guestGlobals[name], writable: true, configurable: true });
    }
  };

  const registerRealm = global => {
    plainProtos.add(global.Object.prototype);
    arrayProtos.add(global.Array.prototype);
  };

  const api = {
    harden,
    classify,
    q,
    makeTaggedRaw,
    makeError,
    symbolFor,
    symbolName,
    bigintFrom,
    makePresence,
    makeHostPromise,
    hostRealmCall,
    adoptHostPromiseRealm,
    adoptEvaluationRealm,
    lookupImport,
    takeCollectedImports,
    watchPromise,
    exoInfo,
    deliverLocal,
    deliverGet,
    lockdownRealm,
    registerRealm,
    freeze,
    guestGlobals,
    buildVat,
  };
  // Hardened by the first `lockdownRealm`, after the realm is tamed.
  return api;
};
