// Vat globals (see `globals.rs`): evaluated in the vat's own compartment
// before its program, so the classes made here belong to the vat's realm.
// Installs the granted names on the global object, hardened.
'use strict';
(global, names, natives, powers) => {
  const { harden, E } = global;
  const granted = new Set(names);
  const { defineProperty, freeze } = Object;

  // ---- text ---------------------------------------------------------------

  // Buffers from the host may come from another realm: test by tag, and
  // copy into this realm's own.
  const isArrayBuffer = value => Object.prototype.toString.call(value) === '[object ArrayBuffer]';
  const toBytes = (input, what) => {
    let view;
    if (isArrayBuffer(input)) {
      view = new Uint8Array(input);
    } else if (ArrayBuffer.isView(input)) {
      view = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
    } else {
      throw TypeError(`${what} must be an ArrayBuffer or a view of one`);
    }
    const copy = new Uint8Array(view.byteLength);
    copy.set(view);
    return copy;
  };

  class TextEncoder {
    get encoding() {
      return 'utf-8';
    }
    encode(input = '') {
      return new Uint8Array(natives.textEncode(`${input}`));
    }
  }

  class TextDecoder {
    #fatal;
    constructor(label = 'utf-8', options = {}) {
      if (!/^(utf-?8|unicode-1-1-utf-8)$/i.test(`${label}`.trim())) {
        throw RangeError(`TextDecoder: only utf-8 is supported, not ${label}`);
      }
      this.#fatal = !!options.fatal;
    }
    get encoding() {
      return 'utf-8';
    }
    get fatal() {
      return this.#fatal;
    }
    decode(input = new Uint8Array(0)) {
      const bytes = toBytes(input, 'TextDecoder.decode input');
      return natives.textDecode(bytes.buffer, this.#fatal);
    }
  }

  // ---- base64 -------------------------------------------------------------

  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const btoa = input => {
    const text = `${input}`;
    let out = '';
    for (let i = 0; i < text.length; i += 3) {
      const codes = [text.charCodeAt(i), text.charCodeAt(i + 1), text.charCodeAt(i + 2)];
      for (const code of codes) {
        if (code > 255) {
          throw Error('btoa: the string has characters outside of Latin-1');
        }
      }
      const [a, b, c] = codes;
      out += ALPHABET[a >> 2];
      out += ALPHABET[((a & 3) << 4) | (Number.isNaN(b) ? 0 : b >> 4)];
      out += Number.isNaN(b) ? '=' : ALPHABET[((b & 15) << 2) | (Number.isNaN(c) ? 0 : c >> 6)];
      out += Number.isNaN(c) ? '=' : ALPHABET[c & 63];
    }
    return out;
  };
  const atob = input => {
    let text = `${input}`.replace(/[\t\n\f\r ]/g, '');
    if (text.length % 4 === 0) {
      text = text.replace(/==?$/, '');
    }
    if (text.length % 4 === 1 || /[^A-Za-z0-9+/]/.test(text)) {
      throw Error('atob: the string is not correctly encoded');
    }
    let out = '';
    let bits = 0;
    let count = 0;
    for (const char of text) {
      bits = (bits << 6) | ALPHABET.indexOf(char);
      count += 6;
      if (count >= 8) {
        count -= 8;
        out += String.fromCharCode((bits >> count) & 255);
      }
    }
    return out;
  };

  // ---- URL ----------------------------------------------------------------

  const encodeForm = text =>
    encodeURIComponent(text).replace(/%20/g, '+').replace(/[!'()~]/g, c => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const decodeForm = text => {
    try {
      return decodeURIComponent(text.replace(/\+/g, ' '));
    } catch {
      return text;
    }
  };

  class URLSearchParams {
    #pairs = [];
    constructor(init = '') {
      if (typeof init === 'string') {
        const text = init.startsWith('?') ? init.slice(1) : init;
        for (const part of text.split('&')) {
          if (part === '') continue;
          const at = part.indexOf('=');
          const [name, value] = at < 0 ? [part, ''] : [part.slice(0, at), part.slice(at + 1)];
          this.#pairs.push([decodeForm(name), decodeForm(value)]);
        }
      } else if (init && typeof init[Symbol.iterator] === 'function') {
        for (const pair of init) {
          const [name, value, ...rest] = [...pair];
          if (rest.length > 0 || value === undefined) {
            throw TypeError('URLSearchParams: each pair must have two items');
          }
          this.#pairs.push([`${name}`, `${value}`]);
        }
      } else if (init && typeof init === 'object') {
        for (const name of Object.keys(init)) {
          this.#pairs.push([name, `${init[name]}`]);
        }
      }
    }
    get size() {
      return this.#pairs.length;
    }
    append(name, value) {
      this.#pairs.push([`${name}`, `${value}`]);
    }
    delete(name) {
      this.#pairs = this.#pairs.filter(([key]) => key !== `${name}`);
    }
    get(name) {
      const found = this.#pairs.find(([key]) => key === `${name}`);
      return found ? found[1] : null;
    }
    getAll(name) {
      return this.#pairs.filter(([key]) => key === `${name}`).map(([, value]) => value);
    }
    has(name) {
      return this.#pairs.some(([key]) => key === `${name}`);
    }
    set(name, value) {
      const at = this.#pairs.findIndex(([key]) => key === `${name}`);
      if (at < 0) {
        this.append(name, value);
        return;
      }
      this.#pairs[at] = [`${name}`, `${value}`];
      this.#pairs = this.#pairs.filter(([key], index) => index <= at || key !== `${name}`);
    }
    sort() {
      this.#pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    }
    forEach(callback, thisArg = undefined) {
      for (const [name, value] of this.#pairs) {
        callback.call(thisArg, value, name, this);
      }
    }
    *entries() {
      for (const [name, value] of this.#pairs) yield [name, value];
    }
    *keys() {
      for (const [name] of this.#pairs) yield name;
    }
    *values() {
      for (const [, value] of this.#pairs) yield value;
    }
    [Symbol.iterator]() {
      return this.entries();
    }
    toString() {
      return this.#pairs.map(([name, value]) => `${encodeForm(name)}=${encodeForm(value)}`).join('&');
    }
  }

  // Parsed by the `url` crate (WHATWG rules); the parts are read-only.
  class URL {
    #parts;
    constructor(input, base = undefined) {
      this.#parts = natives.parseUrl(`${input}`, base === undefined ? undefined : `${base}`);
    }
    static canParse(input, base = undefined) {
      try {
        natives.parseUrl(`${input}`, base === undefined ? undefined : `${base}`);
        return true;
      } catch {
        return false;
      }
    }
    get href() {
      return this.#parts[0];
    }
    get protocol() {
      return this.#parts[1];
    }
    get username() {
      return this.#parts[2];
    }
    get password() {
      return this.#parts[3];
    }
    get hostname() {
      return this.#parts[4];
    }
    get port() {
      return this.#parts[5];
    }
    get host() {
      return this.#parts[5] === '' ? this.#parts[4] : `${this.#parts[4]}:${this.#parts[5]}`;
    }
    get pathname() {
      return this.#parts[6];
    }
    get search() {
      return this.#parts[7];
    }
    get hash() {
      return this.#parts[8];
    }
    get origin() {
      return this.#parts[9];
    }
    // A copy: changing it does not change this URL.
    get searchParams() {
      return new URLSearchParams(this.#parts[7]);
    }
    toString() {
      return this.#parts[0];
    }
    toJSON() {
      return this.#parts[0];
    }
  }

  // ---- crypto -------------------------------------------------------------

  const INTEGER_ARRAYS = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, BigInt64Array, BigUint64Array];
  const crypto = {
    getRandomValues(array) {
      if (!INTEGER_ARRAYS.some(Kind => array instanceof Kind)) {
        throw TypeError('getRandomValues needs an integer typed array');
      }
      const bytes = new Uint8Array(natives.randomBytes(array.byteLength));
      new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(bytes);
      return array;
    },
    randomUUID() {
      const bytes = new Uint8Array(natives.randomBytes(16));
      bytes[6] = (bytes[6] & 0x0f) | 0x40;
      bytes[8] = (bytes[8] & 0x3f) | 0x80;
      const hex = [...bytes].map(byte => byte.toString(16).padStart(2, '0')).join('');
      return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
    },
  };

  // ---- timers -------------------------------------------------------------

  // Each timer waits on the host's `timer.delay(ms)`; its callback runs in
  // the turn that delay settles in, under the vat's time budget.
  const MAX_TIMERS = 10000;
  const MAX_DELAY_MS = 86400000;
  const timers = new Map();
  let lastTimer = 0;
  const delayOf = ms => {
    const delay = Number(ms);
    return Number.isFinite(delay) && delay > 0 ? Math.min(Math.floor(delay), MAX_DELAY_MS) : 0;
  };
  const runCallback = (callback, args) => {
    try {
      callback(...args);
    } catch (error) {
      global.console.error('a timer callback threw', error);
    }
  };
  const startTimer = (callback, ms, args, repeat) => {
    if (typeof callback !== 'function') {
      throw TypeError('a timer needs a function (strings are not evaluated)');
    }
    if (!powers.timer) {
      throw Error('timers are not available: the host gave this vat no timer');
    }
    if (timers.size >= MAX_TIMERS) {
      throw RangeError(`a vat may have at most ${MAX_TIMERS} timers pending`);
    }
    lastTimer += 1;
    const id = lastTimer;
    const delay = repeat ? Math.max(delayOf(ms), 1) : delayOf(ms);
    timers.set(id, true);
    const tick = () => {
      E(powers.timer)
        .delay(delay)
        .then(
          () => {
            if (!timers.has(id)) return;
            if (!repeat) timers.delete(id);
            runCallback(callback, args);
            if (repeat && timers.has(id)) tick();
          },
          error => {
            timers.delete(id);
            global.console.error('a timer failed', error);
          },
        );
    };
    tick();
    return id;
  };
  const setTimeout = (callback, ms = 0, ...args) => startTimer(callback, ms, args, false);
  const setInterval = (callback, ms = 0, ...args) => startTimer(callback, ms, args, true);
  const clearTimeout = id => {
    timers.delete(id);
  };
  const clearInterval = clearTimeout;

  // ---- abort --------------------------------------------------------------

  class AbortSignal {
    #aborted = false;
    #reason = undefined;
    #listeners = [];
    onabort = null;
    get aborted() {
      return this.#aborted;
    }
    get reason() {
      return this.#reason;
    }
    throwIfAborted() {
      if (this.#aborted) throw this.#reason;
    }
    addEventListener(type, listener) {
      if (type === 'abort' && typeof listener === 'function') this.#listeners.push(listener);
    }
    removeEventListener(type, listener) {
      this.#listeners = this.#listeners.filter(each => each !== listener);
    }
    static abort(reason = undefined) {
      const controller = new AbortController();
      controller.abort(reason);
      return controller.signal;
    }
    // Called by the signal's controller only (the key is private).
    static #fire(signal, reason) {
      if (signal.#aborted) return;
      signal.#aborted = true;
      signal.#reason = reason === undefined ? Error('This operation was aborted') : reason;
      const event = freeze({ type: 'abort', target: signal });
      for (const listener of [signal.onabort, ...signal.#listeners]) {
        if (typeof listener === 'function') {
          try {
            listener.call(signal, event);
          } catch (error) {
            global.console.error('an abort listener threw', error);
          }
        }
      }
    }
    static fire = (signal, reason) => AbortSignal.#fire(signal, reason);
  }
  const fireAbort = AbortSignal.fire;
  delete AbortSignal.fire;

  class AbortController {
    #signal = new AbortSignal();
    get signal() {
      return this.#signal;
    }
    abort(reason = undefined) {
      fireAbort(this.#signal, reason);
    }
  }

  // ---- fetch --------------------------------------------------------------

  class Headers {
    #map = new Map();
    constructor(init = undefined) {
      if (init instanceof Headers) {
        init.forEach((value, name) => this.append(name, value));
      } else if (init && typeof init[Symbol.iterator] === 'function') {
        for (const [name, value] of init) this.append(name, value);
      } else if (init && typeof init === 'object') {
        for (const name of Object.keys(init)) this.append(name, init[name]);
      }
    }
    #key(name) {
      const key = `${name}`.toLowerCase();
      if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(key)) {
        throw TypeError(`Headers: ${JSON.stringify(`${name}`)} is not a valid header name`);
      }
      return key;
    }
    append(name, value) {
      const key = this.#key(name);
      const text = `${value}`.trim();
      if (/[\r\n\0]/.test(text)) throw TypeError(`Headers: the value of ${key} has a line break`);
      this.#map.set(key, this.#map.has(key) ? `${this.#map.get(key)}, ${text}` : text);
    }
    set(name, value) {
      this.#map.delete(this.#key(name));
      this.append(name, value);
    }
    get(name) {
      return this.#map.get(this.#key(name)) ?? null;
    }
    has(name) {
      return this.#map.has(this.#key(name));
    }
    delete(name) {
      this.#map.delete(this.#key(name));
    }
    forEach(callback, thisArg = undefined) {
      for (const [name, value] of this.entries()) callback.call(thisArg, value, name, this);
    }
    *entries() {
      yield* [...this.#map.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
    }
    *keys() {
      for (const [name] of this.entries()) yield name;
    }
    *values() {
      for (const [, value] of this.entries()) yield value;
    }
    [Symbol.iterator]() {
      return this.entries();
    }
  }

  // A body as bytes (an ArrayBuffer) or text, or undefined.
  const bodyOf = body => {
    if (body === undefined || body === null) return undefined;
    if (typeof body === 'string') return body;
    if (body instanceof URLSearchParams) return body.toString();
    if (isArrayBuffer(body) || ArrayBuffer.isView(body)) return toBytes(body, 'a body').buffer;
    return `${body}`;
  };

  class Body {
    #body;
    #used = false;
    constructor(body) {
      this.#body = bodyOf(body);
    }
    get bodyUsed() {
      return this.#used;
    }
    #take() {
      if (this.#used) throw TypeError('the body has been read already');
      this.#used = true;
      return this.#body;
    }
    async arrayBuffer() {
      const body = this.#take();
      if (body === undefined) return new ArrayBuffer(0);
      if (typeof body === 'string') return natives.textEncode(body);
      return toBytes(body, 'a body').buffer;
    }
    async bytes() {
      return new Uint8Array(await this.arrayBuffer());
    }
    async text() {
      const body = this.#take();
      if (body === undefined) return '';
      if (typeof body === 'string') return body;
      return natives.textDecode(body, false);
    }
    async json() {
      return JSON.parse(await this.text());
    }
    // The raw body, for `fetch`.
    static raw = body => body.#body;
  }
  const rawBody = Body.raw;
  delete Body.raw;

  class Request extends Body {
    #url;
    #method;
    #headers;
    #signal;
    constructor(input, init = {}) {
      const from = input instanceof Request ? input : undefined;
      super(init.body !== undefined ? init.body : from ? rawBody(from) : undefined);
      this.#url = from ? from.url : new URL(`${input}`).href;
      this.#method = `${init.method ?? from?.method ?? 'GET'}`.toUpperCase();
      this.#headers = new Headers(init.headers ?? from?.headers);
      this.#signal = init.signal ?? from?.signal ?? null;
      if ((this.#method === 'GET' || this.#method === 'HEAD') && rawBody(this) !== undefined) {
        throw TypeError(`a ${this.#method} request cannot have a body`);
      }
    }
    get url() {
      return this.#url;
    }
    get method() {
      return this.#method;
    }
    get headers() {
      return this.#headers;
    }
    get signal() {
      return this.#signal;
    }
  }

  class Response extends Body {
    #status;
    #statusText;
    #headers;
    #url;
    #redirected;
    constructor(body = null, init = {}, url = '', redirected = false) {
      super(body);
      this.#status = init.status ?? 200;
      this.#statusText = `${init.statusText ?? ''}`;
      this.#headers = new Headers(init.headers);
      this.#url = url;
      this.#redirected = redirected;
    }
    get status() {
      return this.#status;
    }
    get ok() {
      return this.#status >= 200 && this.#status <= 299;
    }
    get statusText() {
      return this.#statusText;
    }
    get headers() {
      return this.#headers;
    }
    get url() {
      return this.#url;
    }
    get redirected() {
      return this.#redirected;
    }
    static json(data, init = {}) {
      const headers = new Headers(init.headers);
      headers.set('content-type', 'application/json');
      return new Response(JSON.stringify(data), { ...init, headers });
    }
  }

  // The request goes to the host's `fetch` power, which checks the vat's
  // network allow-list before it connects and refuses what is not on it.
  const fetch = async (input, init = {}) => {
    if (!powers.fetch) {
      throw TypeError('fetch is not available: the host gave this vat no network');
    }
    const request = new Request(input, init);
    const signal = request.signal;
    signal?.throwIfAborted?.();
    const body = rawBody(request);
    const asked = E(powers.fetch).fetch(
      harden({
        url: request.url,
        method: request.method,
        headers: [...request.headers.entries()],
        body: body === undefined ? null : body,
        redirect: `${init.redirect ?? 'follow'}`,
      }),
    );
    const answer = await (signal && typeof signal.addEventListener === 'function'
      ? new Promise((resolve, reject) => {
          signal.addEventListener('abort', () => reject(signal.reason));
          asked.then(resolve, reject);
        })
      : asked);
    return new Response(
      answer.body,
      { status: answer.status, statusText: answer.statusText, headers: answer.headers },
      answer.url,
      answer.redirected,
    );
  };

  // ---- install ------------------------------------------------------------

  const offered = {
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    crypto,
    fetch,
    Request,
    Headers,
    Response,
    TextEncoder,
    TextDecoder,
    URL,
    URLSearchParams,
    atob,
    btoa,
    AbortController,
    AbortSignal,
  };
  for (const name of names) {
    if (name in offered) {
      defineProperty(global, name, { value: harden(offered[name]), writable: true, configurable: true });
    }
  }
  // `fetch` makes the classes it answers with available too.
  harden([Request, Response, Headers, AbortSignal, URL, URLSearchParams, Body]);
  return granted.size;
};
