// Connects to a Capstan node's Endo CapTP socket (run/captp0.sock) with
// nothing but @endo/captp and Endo's netstring framing, as an Endo daemon
// client would. The bootstrap object offers ping() and host().

import '@endo/init';

import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';

import { makeCapTP } from '@endo/captp';
import { makeNetstringReader, makeNetstringWriter } from '@endo/netstring';
import { makeNodeReader, makeNodeWriter } from '@endo/stream-node';

/**
 * Where the socket is: $CAPSTAN_CAPTP_SOCKET, or run/captp0.sock in the
 * node's state directory, found as the capstan command finds it:
 * $CAPSTAN_STATE, else capstan/ in the XDG state directory.
 */
export const defaultSocketPath = () => {
  if (process.env.CAPSTAN_CAPTP_SOCKET) {
    return process.env.CAPSTAN_CAPTP_SOCKET;
  }
  const state =
    process.env.CAPSTAN_STATE ||
    path.join(process.env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state'), 'capstan');
  return path.join(state, 'run', 'captp0.sock');
};

/**
 * @param {string} socketPath
 * @param {object} [options]
 * @param {boolean} [options.gcImports] drop imports JavaScript's GC collects
 *   (on by default: without it @endo/captp never drops anything, and the
 *   node keeps all it ever sent this connection until the connection ends)
 * @param {(direction: 'sent' | 'received', message: any) => void} [options.trace]
 */
export const connect = async (socketPath = defaultSocketPath(), { gcImports = true, trace } = {}) => {
  const socket = net.connect(socketPath);
  await once(socket, 'connect');
  const writer = makeNetstringWriter(makeNodeWriter(socket));
  const reader = makeNetstringReader(makeNodeReader(socket));
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  const send = message => {
    trace?.('sent', message);
    return writer.next(encoder.encode(JSON.stringify(message)));
  };
  const { dispatch, getBootstrap, abort } = makeCapTP('capstan-js', send, undefined, {
    gcImports,
    onReject: () => {},
  });

  const closed = (async () => {
    for await (const bytes of reader) {
      const message = JSON.parse(decoder.decode(bytes));
      trace?.('received', message);
      dispatch(message);
    }
  })().finally(() => abort(Error('the node closed the connection')));
  closed.catch(() => {});

  return harden({
    bootstrap: getBootstrap(),
    closed,
    close: () => {
      abort(Error('closed by the client'));
      socket.end();
    },
  });
};
