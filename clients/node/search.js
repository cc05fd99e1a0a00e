#!/usr/bin/env node
// Minimal Node.js client of the visual-search gateway (visualsearch.v1.SearchService).
//
// It loads the very .proto the gateway serves (../../proto, relative to this file) at run time with
// @grpc/proto-loader: no generated code, so it can never drift from the contract.
//
//   node search.js --address 127.0.0.1:50051 --model NAME (--image PATH | --id ID) [--top-k 5] [--token T]
//   node search.js --address 127.0.0.1:50051 --list-models
//   node search.js --address 127.0.0.1:50051 --model NAME --image A.png [--image B.png ...] --embed
//   node search.js --address 127.0.0.1:50051 --model NAME --find-duplicates [--min-verdict V | --min-score S]
//
// Search also takes --min-score S, --min-verdict NEAR_DUPLICATE|EXACT and --offset N (paging).
// --find-duplicates prints {"messages": [...]}: the stream's progress, groups and summary, in order.
//
// The response is printed as JSON on stdout (exit 0). A gRPC error is printed as
// {"code": <numeric status>, "name": "<STATUS_NAME>", "details": "..."} on stderr (exit 1); bad usage exits 2.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const PROTO_FILE = 'visualsearch/v1/search.proto';
const DEFAULT_DEADLINE_S = 10;

// keepCase: false -> field names are lowerCamelCase (topK, outputFields, decodeMs), the proto3 canonical
// JSON names, so the printed JSON matches what protobuf's JSON printers (MessageToJson, grpcurl) emit.
// Requests built with these functions must use the same camelCase names.
// longs: String -> int64 fields (counts) are JSON-safe decimal strings, as in canonical proto3 JSON.
// enums: String -> enum names ("FILTER_OP_EQ"); oneofs: true -> a virtual field names the set member
// (e.g. Value.kind = "stringValue"); defaults: true -> zero values are printed rather than omitted.
const LOADER_OPTIONS = {
  keepCase: false,
  longs: String,
  enums: String,
  bytes: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

let cachedPackage = null;

/** The loaded `visualsearch.v1` package (cached). */
function loadPackage() {
  if (cachedPackage === null) {
    const definition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
    cachedPackage = grpc.loadPackageDefinition(definition).visualsearch.v1;
  }
  return cachedPackage;
}

/** A SearchService client. Plaintext unless `tls` is true. */
function createClient(address, { tls = false } = {}) {
  const { SearchService } = loadPackage();
  const credentials = tls ? grpc.credentials.createSsl() : grpc.credentials.createInsecure();
  return new SearchService(address, credentials);
}

function callOptions(deadlineS = DEFAULT_DEADLINE_S) {
  return { deadline: new Date(Date.now() + deadlineS * 1000) };
}

function metadataFor(token) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

function unary(client, method, request, { token, deadlineS } = {}) {
  return new Promise((resolve, reject) => {
    client[method](request, metadataFor(token), callOptions(deadlineS), (err, response) => {
      if (err) reject(err);
      else resolve(response);
    });
  });
}

/** Calls Search. `request` uses camelCase fields: {model, image|vector|id, topK, filters, outputFields}. */
function search(client, request, options = {}) {
  return unary(client, 'Search', request, options);
}

/** Calls Embed: {model, images: [Buffer, ...]} -> {model, vectors: [{values}], timings}. */
function embed(client, request, options = {}) {
  return unary(client, 'Embed', request, options);
}

/** Calls FindDuplicates (server streaming); resolves to every message of the stream, in order. */
function findDuplicates(client, request, { token, deadlineS } = {}) {
  return new Promise((resolve, reject) => {
    const messages = [];
    const call = client.FindDuplicates(request, metadataFor(token), callOptions(deadlineS));
    call.on('data', (message) => messages.push(message));
    call.on('error', reject);
    call.on('end', () => resolve(messages));
  });
}

/** Calls ListModels. */
function listModels(client, options = {}) {
  return unary(client, 'ListModels', {}, options);
}

/** The JSON-able form of a gRPC error: {code, name, details}. */
function errorToJson(err) {
  const code = typeof err.code === 'number' ? err.code : grpc.status.UNKNOWN;
  return {
    code,
    name: grpc.status[code] || 'UNKNOWN',
    details: err.details !== undefined ? err.details : String(err.message || err),
  };
}

const USAGE = `usage: node search.js --address HOST:PORT --model NAME (--image PATH | --id ID) [--top-k N]
                      [--min-score S] [--min-verdict NEAR_DUPLICATE|EXACT] [--offset N]
                      [--token TOKEN] [--deadline-s S] [--tls]
       node search.js --address HOST:PORT --model NAME --image PATH [--image PATH ...] --embed
       node search.js --address HOST:PORT --model NAME --find-duplicates [--min-verdict V | --min-score S]
       node search.js --address HOST:PORT --list-models [--token TOKEN] [--deadline-s S] [--tls]`;
const VERDICTS = ['SIMILAR', 'NEAR_DUPLICATE', 'EXACT'];

class UsageError extends Error {}

function parseCli(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        address: { type: 'string' },
        model: { type: 'string' },
        image: { type: 'string', multiple: true },
        id: { type: 'string' },
        'top-k': { type: 'string' },
        token: { type: 'string' },
        'deadline-s': { type: 'string' },
        'list-models': { type: 'boolean', default: false },
        embed: { type: 'boolean', default: false },
        'find-duplicates': { type: 'boolean', default: false },
        'min-score': { type: 'string' },
        'min-verdict': { type: 'string' },
        offset: { type: 'string' },
        tls: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError(err.message);
  }
  if (values.help) return { help: true };
  if (!values.address) throw new UsageError('--address is required');
  const deadlineS = values['deadline-s'] === undefined ? DEFAULT_DEADLINE_S : Number(values['deadline-s']);
  if (!(deadlineS > 0)) throw new UsageError('--deadline-s must be a positive number');
  const common = { address: values.address, token: values.token, deadlineS, tls: values.tls };
  if (values['list-models']) return { ...common, listModels: true };

  if (!values.model) throw new UsageError('--model is required');
  const scoreOptions = {};
  if (values['min-score'] !== undefined) {
    const minScore = Number(values['min-score']);
    if (!Number.isFinite(minScore)) throw new UsageError('--min-score must be a number in [-1, 1]');
    scoreOptions.minScore = minScore;
  }
  if (values['min-verdict'] !== undefined) {
    const verdict = values['min-verdict'].toUpperCase();
    if (!VERDICTS.includes(verdict)) throw new UsageError(`--min-verdict must be one of ${VERDICTS.join(', ')}`);
    scoreOptions.minVerdict = `VERDICT_${verdict}`;
  }
  if (values['find-duplicates']) {
    return { ...common, findDuplicates: true, request: { model: values.model, ...scoreOptions } };
  }
  if (values.embed) {
    if (values.image === undefined) throw new UsageError('--embed needs at least one --image PATH');
    return { ...common, embed: true, request: { model: values.model, images: values.image.map(readImage) } };
  }
  if ((values.image === undefined) === (values.id === undefined)) {
    throw new UsageError('give exactly one of --image PATH or --id ID');
  }
  if (values.image !== undefined && values.image.length > 1) throw new UsageError('search takes one --image');
  const request = { model: values.model, ...scoreOptions };
  if (values.offset !== undefined) {
    const offset = Number(values.offset);
    if (!Number.isInteger(offset) || offset < 0) throw new UsageError('--offset must be an integer >= 0');
    request.offset = offset;
  }
  if (values['top-k'] !== undefined) {
    const topK = Number(values['top-k']);
    if (!Number.isInteger(topK) || topK < 1) throw new UsageError('--top-k must be a positive integer');
    request.topK = topK;
  }
  if (values.image !== undefined) {
    request.image = readImage(values.image[0]);
  } else {
    request.id = values.id;
  }
  return { ...common, request };
}

function readImage(file) {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read --image ${file}: ${err.message}`);
  }
}

/** Runs the command line; resolves to the exit status (0 ok, 1 gRPC error, 2 usage). */
async function main(argv = process.argv.slice(2)) {
  let cli;
  try {
    cli = parseCli(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`error: ${err.message}\n${USAGE}\n`);
    return 2;
  }
  if (cli.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const client = createClient(cli.address, { tls: cli.tls });
  const options = { token: cli.token, deadlineS: cli.deadlineS };
  try {
    let response;
    if (cli.listModels) response = await listModels(client, options);
    else if (cli.embed) response = await embed(client, cli.request, options);
    else if (cli.findDuplicates) response = { messages: await findDuplicates(client, cli.request, options) };
    else response = await search(client, cli.request, options);
    process.stdout.write(`${JSON.stringify(response, null, 2)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`${JSON.stringify(errorToJson(err))}\n`);
    return 1;
  } finally {
    client.close();
  }
}

module.exports = {
  PROTO_ROOT,
  PROTO_FILE,
  LOADER_OPTIONS,
  loadPackage,
  createClient,
  search,
  embed,
  findDuplicates,
  listModels,
  errorToJson,
  parseCli,
  main,
};

if (require.main === module) {
  main().then(
    (status) => {
      process.exitCode = status;
    },
    (err) => {
      process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
      process.exitCode = 1;
    },
  );
}
