// node-server.js - node's ws (Debian node-ws) as an echo server for gev's
// client: prints "listening on 127.0.0.1:PORT", echoes every message with
// its opcode, and exits on SIGTERM.
'use strict';
const WebSocket = require('ws');

const wss = new WebSocket.WebSocketServer({ host: '127.0.0.1', port: 0 });
wss.on('listening', () => {
  console.log('listening on 127.0.0.1:' + wss.address().port);
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
process.on('SIGTERM', () => process.exit(0));
