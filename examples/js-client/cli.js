#!/usr/bin/env node
// A small command line over connect.js:
//   node cli.js ping
//   node cli.js eval SOURCE [codeName:petName ...] [--name NAME]
//   node cli.js list
//   node cli.js call NAME METHOD [JSON_ARG ...]
// The socket is $CAPSTAN_CAPTP_SOCKET or $CAPSTAN_STATE/run/captp0.sock.

import '@endo/init';

import { E } from '@endo/far';
import { connect } from './connect.js';

const [command, ...args] = process.argv.slice(2);
const connection = await connect();
const { bootstrap } = connection;
const host = E(bootstrap).host();

const run = async () => {
  switch (command) {
    case 'ping':
      return E(bootstrap).ping();
    case 'eval': {
      const nameAt = args.indexOf('--name');
      const resultName = nameAt >= 0 ? args.splice(nameAt, 2)[1] : undefined;
      const [source, ...pairs] = args;
      const codeNames = pairs.map(pair => pair.split(':')[0]);
      const petNames = pairs.map(pair => pair.split(':')[1]);
      return E(host).evaluate(undefined, source, codeNames, petNames, resultName);
    }
    case 'list':
      return E(host).list();
    case 'call': {
      const [name, method, ...jsonArgs] = args;
      return E(E(host).lookup(name))[method](...jsonArgs.map(arg => JSON.parse(arg)));
    }
    default:
      throw Error(`unknown command ${command}; see the head of cli.js`);
  }
};

try {
  console.log(await run());
} catch (error) {
  console.error(`capstan-js: ${error.message}`);
  process.exitCode = 1;
} finally {
  connection.close();
}
