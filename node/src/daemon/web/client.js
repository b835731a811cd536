// Capstan's page-side CapTP client, served at /capstan/client.js.
//
//   import { connect, E } from '/capstan/client.js';
//   const powers = await connect();          // the app's agent
//   const names = await E(powers).list();    // its pet names
//   const counter = await E(powers).lookup('counter');
//   await E(counter).increment();            // a live reference
//
// It speaks Endo's CapTP (the JSON messages of @endo/captp) over one
// WebSocket to the node, one message per text frame. The page holds
// remote presences of the node's objects and promises for their answers;
// it exports nothing itself, so the node can call nothing in the page.
// E(promiseForAnswer).method() is pipelined: it goes out at once, aimed at
// the answer.
//
// The node's tables stay small on a long-lived page: once a question is
// answered its answer is dropped (the answer's promise then stands for
// what it settled to), so is a promise of the node's once it settles, and
// a presence the page no longer holds is dropped when the browser
// collects it (CTP_DROP with the number of times it
// arrived, as @endo/captp counts).

const presences = new WeakMap(); // presence or unanswered question's promise -> { conn, slot }
const answered = new WeakMap(); // answered question's promise -> { ok, value }

/** The WebSocket URL of this page's app: /app/<token>/... -> /capstan/ws/<token>. */
function defaultUrl() {
  const match = /^\/app\/([0-9a-f]+)\//.exec(location.pathname);
  if (!match) throw Error('this page is not served as a Capstan app (/app/<token>/)');
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/capstan/ws/${match[1]}`;
}

function makePresence(conn, slot, iface) {
  const name = iface ? iface.replace(/^Alleged: /, '') : 'Remotable';
  const presence = Object.freeze({ [Symbol.toStringTag]: `Alleged: ${name}` });
  presences.set(presence, { conn, slot });
  return presence;
}

function decodeError({ name, message }) {
  const Maker = { TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError }[name] ?? Error;
  const error = Maker(message);
  if (!(name in { Error: 1, TypeError: 1, RangeError: 1, SyntaxError: 1, ReferenceError: 1, EvalError: 1, URIError: 1 })) {
    error.name = name;
  }
  return error;
}

class Connection {
  constructor(socket) {
    this.socket = socket;
    this.nextQuestion = 1;
    this.questions = new Map(); // 'q-N' -> { resolve, reject }
    this.imports = new Map(); // 'o-N' -> WeakRef(presence); 'p-N' -> promise
    this.arrivals = new Map(); // 'o-N', 'p-N' -> times it arrived since its last drop
    this.promiseKits = new Map(); // 'p-N' -> { resolve, reject }
    this.collected = new FinalizationRegistry((slot) => this.dropImport(slot));
    this.drops = []; // CTP_DROP messages waiting for the end of the current task
    this.closed = null;
  }

  /** The browser collected the presence of `slot`: tell the node, unless it arrived again since. */
  dropImport(slot) {
    if (this.closed || this.imports.get(slot)?.deref() !== undefined) return;
    const decRefs = this.arrivals.get(slot) ?? 0;
    this.imports.delete(slot);
    this.arrivals.delete(slot);
    if (decRefs > 0) this.drop(slot, decRefs);
  }

  send(message) {
    if (this.closed) throw this.closed;
    this.socket.send(JSON.stringify(message));
  }

  /**
   * Drops go out after the current task, so that a call made as soon as
   * an answer arrives reaches the node before the answer's drop does.
   */
  drop(slotID, decRefs) {
    if (this.closed) return;
    this.drops.push({ type: 'CTP_DROP', epoch: 0, slotID, decRefs });
    if (this.drops.length > 1) return;
    setTimeout(() => {
      const drops = this.drops;
      this.drops = [];
      if (this.closed) return;
      for (const message of drops) this.socket.send(JSON.stringify(message));
    }, 0);
  }

  /** Asks a question; returns the answer's promise, registered for pipelining. */
  ask(message) {
    const questionID = `q-${this.nextQuestion++}`;
    let kit;
    const answer = new Promise((resolve, reject) => { kit = { resolve, reject }; });
    if (this.closed) {
      kit.reject(this.closed);
      return answer;
    }
    this.questions.set(questionID, {
      settle: (ok, value) => {
        // From now on the promise stands for its value, not the node's answer.
        presences.delete(answer);
        answered.set(answer, { ok, value });
        (ok ? kit.resolve : kit.reject)(value);
        this.drop(questionID, 1);
      },
      reject: kit.reject,
    });
    presences.set(answer, { conn: this, slot: questionID });
    this.send({ ...message, epoch: 0, questionID });
    return answer;
  }

  call(target, method, args) {
    return this.ask({ type: 'CTP_CALL', target, method: this.encode([method, args]) });
  }

  /** A slot as the node writes it ('o+3') -> the value it stands for here. */
  importSlot(slot, iface) {
    const ours = slot[1] === '+' ? `${slot[0]}-${slot.slice(2)}` : `${slot[0]}+${slot.slice(2)}`;
    if (ours[1] === '+') throw Error(`the node named back an object of ours (${slot}), and we export none`);
    this.arrivals.set(ours, (this.arrivals.get(ours) ?? 0) + 1);
    if (ours[0] === 'o') {
      let presence = this.imports.get(ours)?.deref();
      if (presence === undefined) {
        presence = makePresence(this, ours, iface);
        this.imports.set(ours, new WeakRef(presence));
        this.collected.register(presence, ours);
      }
      return presence;
    }
    let value = this.imports.get(ours);
    if (value !== undefined) return value;
    if (ours[0] === 'p') {
      value = new Promise((resolve, reject) => this.promiseKits.set(ours, { resolve, reject }));
      presences.set(value, { conn: this, slot: ours });
    } else {
      throw Error(`unexpected slot ${slot}`);
    }
    this.imports.set(ours, value);
    return value;
  }

  decode({ body, slots }) {
    if (body.startsWith('#')) throw Error('smallcaps bodies are not read by this client');
    const revive = (x) => {
      if (Array.isArray(x)) return x.map(revive);
      if (x === null || typeof x !== 'object') return x;
      if (!('@qclass' in x)) {
        return Object.fromEntries(Object.entries(x).map(([key, value]) => [key, revive(value)]));
      }
      switch (x['@qclass']) {
        case 'undefined': return undefined;
        case 'NaN': return NaN;
        case 'Infinity': return Infinity;
        case '-Infinity': return -Infinity;
        case 'bigint': return BigInt(x.digits);
        case 'symbol': return x.name.startsWith('@@') ? Symbol[x.name.slice(2)] : Symbol.for(x.name);
        case 'error': return decodeError(x);
        case 'slot': return this.importSlot(slots[x.index], x.iface);
        case 'tagged': return Object.freeze({ [Symbol.toStringTag]: x.tag, payload: revive(x.payload) });
        case 'hilbert': return { ...revive(x.rest ?? {}), '@qclass': revive(x.original) };
        default: throw Error(`unknown @qclass ${x['@qclass']}`);
      }
    };
    return revive(JSON.parse(body));
  }

  encode(value) {
    const slots = [];
    const slotIndex = (slot) => {
      const known = slots.indexOf(slot);
      return known >= 0 ? known : slots.push(slot) - 1;
    };
    const pass = (v) => {
      switch (typeof v) {
        case 'undefined': return { '@qclass': 'undefined' };
        case 'bigint': return { '@qclass': 'bigint', digits: String(v) };
        case 'symbol': {
          const name = Symbol.keyFor(v) ?? v.description;
          return { '@qclass': 'symbol', name };
        }
        case 'number':
          if (Number.isNaN(v)) return { '@qclass': 'NaN' };
          if (v === Infinity) return { '@qclass': 'Infinity' };
          if (v === -Infinity) return { '@qclass': '-Infinity' };
          return Object.is(v, -0) ? 0 : v;
        case 'string': case 'boolean': return v;
        case 'function': throw TypeError('a page cannot pass functions: it exports nothing');
        default: break;
      }
      if (v === null) return null;
      const settled = answered.get(v);
      if (settled?.ok) return pass(settled.value);
      const remote = presences.get(v);
      if (remote) {
        if (remote.conn !== this) throw TypeError('a reference from another connection cannot be passed');
        return { '@qclass': 'slot', index: slotIndex(remote.slot) };
      }
      if (Array.isArray(v)) return v.map(pass);
      if (v instanceof Error) return { '@qclass': 'error', name: v.name, message: v.message };
      if (typeof v.then === 'function') throw TypeError('a page cannot pass its own promises: await them first');
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) {
        throw TypeError('a page can pass only data and remote references, not its own objects');
      }
      if ('@qclass' in v) throw TypeError('a record cannot have a @qclass property');
      return Object.fromEntries(Object.entries(v).map(([key, item]) => [key, pass(item)]));
    };
    const body = JSON.stringify(pass(value));
    return { body, slots };
  }

  receive(text) {
    const message = JSON.parse(text);
    const settle = (kit, ok, capdata) => {
      if (!kit) return;
      let value;
      try {
        value = this.decode(capdata);
      } catch (error) {
        [ok, value] = [false, error];
      }
      if (kit.settle) kit.settle(ok, value);
      else (ok ? kit.resolve : kit.reject)(value);
    };
    switch (message.type) {
      case 'CTP_RETURN': {
        const kit = this.questions.get(message.answerID);
        this.questions.delete(message.answerID);
        settle(kit, 'result' in message, message.result ?? message.exception);
        break;
      }
      case 'CTP_RESOLVE': {
        const slot = message.promiseID;
        const kit = this.promiseKits.get(slot);
        this.promiseKits.delete(slot);
        settle(kit, 'res' in message, message.res ?? message.rej);
        // Settled: the node's promise is needed no more.
        const decRefs = this.arrivals.get(slot) ?? 0;
        this.imports.delete(slot);
        this.arrivals.delete(slot);
        if (kit && decRefs > 0) this.drop(slot, decRefs);
        break;
      }
      case 'CTP_CALL': case 'CTP_BOOTSTRAP': {
        const error = { '@qclass': 'error', name: 'TypeError', message: 'this page exports no objects' };
        this.send({
          type: 'CTP_RETURN', epoch: 0, answerID: message.questionID,
          exception: { body: JSON.stringify(error), slots: [] },
        });
        break;
      }
      case 'CTP_DISCONNECT':
        this.close(Error(`the node ended the connection: ${message.reason}`));
        break;
      default:
        break; // CTP_DROP: we export nothing to drop.
    }
  }

  close(reason) {
    if (this.closed) return;
    this.closed = reason;
    for (const kit of [...this.questions.values(), ...this.promiseKits.values()]) kit.reject(reason);
    this.imports.clear();
    this.arrivals.clear();
    this.questions.clear();
    this.promiseKits.clear();
    this.socket.close();
  }
}

/**
 * Connects to the node that served this page; resolves to the app's
 * powers (its agent), or rejects if the connection is refused or ends.
 */
export function connect({ url = defaultUrl() } = {}) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    const conn = new Connection(socket);
    socket.addEventListener('message', (event) => {
      try {
        conn.receive(event.data);
      } catch (error) {
        conn.close(Error(`a message from the node is malformed: ${error.message}`));
      }
    });
    socket.addEventListener('close', (event) => {
      const reason = Error(`the connection closed (${event.code}${event.reason ? `: ${event.reason}` : ''})`);
      conn.close(reason);
      reject(reason);
    });
    socket.addEventListener('open', () => {
      conn.ask({ type: 'CTP_BOOTSTRAP' }).then(resolve, reject);
    });
  });
}

/** Eventual send: E(target).method(...args) returns a promise for the result. */
export function E(target) {
  return new Proxy(Object.create(null), {
    get(_, method) {
      if (typeof method !== 'string') return undefined;
      return (...args) => {
        const remote = presences.get(target);
        if (remote) return remote.conn.call(remote.slot, method, args);
        return Promise.resolve(target).then((settled) => {
          if (presences.has(settled)) return E(settled)[method](...args);
          if (typeof settled?.[method] !== 'function') throw TypeError(`target has no method ${method}`);
          return settled[method](...args);
        });
      };
    },
  });
}
