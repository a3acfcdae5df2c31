#!/usr/bin/env node
// A Node.js imagesieve client, built from proto/imagesieve/v1/*.proto at run
// time (@grpc/proto-loader, no generated code): the health check, Embed, and
// CheckDuplicates (a bidirectional stream) with add_if_unique.
//
//   node client.js --address 127.0.0.1:50051 --collection node-interop IMAGE...
//     [--token TOKEN | env IMAGESIEVE_TOKEN] [--tls-ca ca.pem]
//
// Prints one JSON object (the last line) with what the server answered.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const REPO_PROTO = path.resolve(__dirname, '..', '..', 'proto');
const LOCAL_PROTO = path.resolve(__dirname, 'proto');

function parseArgs(argv) {
  const args = { address: '127.0.0.1:50051', collection: 'node-interop', images: [],
                 token: process.env.IMAGESIEVE_TOKEN || '', tlsCa: '', deadlineS: 60 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--address') args.address = argv[++i];
    else if (a === '--collection') args.collection = argv[++i];
    else if (a === '--token') args.token = argv[++i];
    else if (a === '--tls-ca') args.tlsCa = argv[++i];
    else if (a === '--deadline-s') args.deadlineS = Number(argv[++i]);
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else args.images.push(a);
  }
  if (args.images.length === 0) throw new Error('give at least one image file');
  return args;
}

function load(files) {
  const def = protoLoader.loadSync(files, {
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
    includeDirs: [REPO_PROTO, LOCAL_PROTO],
  });
  return grpc.loadPackageDefinition(def);
}

const deadline = (s) => new Date(Date.now() + s * 1000);
const unary = (client, method, request, metadata, s) => new Promise((resolve, reject) => {
  client[method](request, metadata, { deadline: deadline(s) }, (err, res) => (err ? reject(err) : resolve(res)));
});

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const pkg = load(['imagesieve/v1/embedding.proto', 'imagesieve/v1/collections.proto',
                    'imagesieve/v1/duplicates.proto', 'grpc/health/v1/health.proto']);
  const v1 = pkg.imagesieve.v1;
  const creds = args.tlsCa ? grpc.credentials.createSsl(fs.readFileSync(args.tlsCa))
                           : grpc.credentials.createInsecure();
  const md = new grpc.Metadata();
  if (args.token) md.set('authorization', `Bearer ${args.token}`);
  md.set('x-request-id', `node-interop-${process.pid}`);

  const out = { client: `node ${process.version}, @grpc/grpc-js ${require('@grpc/grpc-js/package.json').version}` };

  // 1. Health: open, no token needed.
  const health = new pkg.grpc.health.v1.Health(args.address, creds);
  out.health = (await unary(health, 'Check', { service: '' }, new grpc.Metadata(), 10)).status;

  // 2. Embed: one unary call with every image.
  const embedding = new v1.EmbeddingService(args.address, creds);
  const images = args.images.map((p) => ({ key: path.basename(p), data: fs.readFileSync(p) }));
  const info = await unary(embedding, 'GetModelInfo', {}, md, 10);
  const resp = await unary(embedding, 'Embed', { images, top_k_classes: 1 }, md, args.deadlineS);
  out.model = resp.model;
  out.dim = info.dim;
  out.embeddings = resp.embeddings.map((e) => ({
    key: e.key,
    error: e.error ? { code: e.error.code, message: e.error.message } : null,
    dim: e.vector.length,
    norm: Math.sqrt(e.vector.reduce((s, x) => s + x * x, 0)),
    head: e.vector.slice(0, 8),
    top_class: e.top_classes.length ? e.top_classes[0].name : null,
    width: e.width, height: e.height,
  }));

  // 3. CheckDuplicates: create the collection, then two passes over one
  //    bidirectional stream each: add what is unique, then check again.
  const collections = new v1.CollectionService(args.address, creds);
  await unary(collections, 'CreateCollection', { name: args.collection, exist_ok: true }, md, 10);
  const duplicates = new v1.DuplicateService(args.address, creds);
  const check = (addIfUnique) => new Promise((resolve, reject) => {
    const results = [];
    const call = duplicates.CheckDuplicates(md, { deadline: deadline(args.deadlineS) });
    call.on('data', (r) => results.push(...r.results.map((c) => ({
      key: c.key, verdict: c.verdict, added: c.added,
      nearest: c.neighbors.length ? { key: c.neighbors[0].key, cosine: c.neighbors[0].cosine } : null,
      error: c.error ? c.error.message : null,
    }))));
    call.on('error', reject);
    call.on('end', () => resolve(results));
    for (const img of images) {  // one image per message: a real stream
      call.write({ collection: args.collection, images: [img], k: 3, add_if_unique: addIfUnique });
    }
    call.end();
  });
  out.first_pass = await check(true);
  out.second_pass = await check(false);
  const stats = await unary(collections, 'GetCollectionStats', { name: args.collection }, md, 10);
  out.collection_size = Number(stats.num_images);

  for (const c of [health, embedding, collections, duplicates]) c.close();
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(`node interop client failed: ${err.code !== undefined ? `${err.code} ` : ''}${err.message}`);
  process.exit(1);
});
