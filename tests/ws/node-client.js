// node-client.js URL - node's ws (Debian node-ws) as a client of a gev
// WebSocket echo server: text and binary messages of every length class,
// multi-byte UTF-8, a ping, then a close handshake. Exits 0 when every echo
// matched, 1 otherwise (within 20 s).
'use strict';
const WebSocket = require('ws');
const fs = require('fs');

// wss://: WS_CA names the PEM file of the CA that must have signed the
// server's certificate (verified, host name included).
const opts = { maxPayload: 32 << 20 };
if (process.env.WS_CA) opts.ca = fs.readFileSync(process.env.WS_CA);
const ws = new WebSocket(process.argv[2], opts);
const sizes = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20];
const cases = [];
for (const n of sizes) {
  cases.push({ binary: false, data: 'κόσμε a'.repeat(Math.ceil(n / 7)).slice(0, n) });
  cases.push({ binary: true, data: Buffer.alloc(n, n & 0xff) });
}
let i = 0;

function fail(why) {
  console.error('node-client: ' + why);
  process.exit(1);
}
setTimeout(() => fail('timed out at case ' + i), 20000).unref();

function next() {
  if (i === cases.length) {
    ws.ping('are you there');
    return;
  }
  const c = cases[i];
  ws.send(c.data, { binary: c.binary });
}

ws.on('open', next);
ws.on('message', (data, isBinary) => {
  const c = cases[i];
  if (isBinary !== c.binary) fail('case ' + i + ': opcode changed');
  const want = c.binary ? c.data : Buffer.from(c.data, 'utf8');
  if (!Buffer.from(data).equals(want)) fail('case ' + i + ': payload differs');
  i++;
  next();
});
ws.on('pong', (data) => {
  if (data.toString() !== 'are you there') fail('pong payload ' + data);
  ws.close(1000, 'bye');
});
ws.on('close', (code) => {
  if (i !== cases.length) fail('closed early, code ' + code);
  if (code !== 1000) fail('close code ' + code);
  console.log('node-client: ' + cases.length + ' echoes, ping, close 1000: ok');
  process.exit(0);
});
ws.on('error', (e) => fail(e.message));
