/* page.h - the chat page the websocket example serves at GET /: plain
 * HTML and a few lines of script, no external resources. */
#ifndef GEV_EX_WS_PAGE_H
#define GEV_EX_WS_PAGE_H

static const char chat_page[] =
    "<!doctype html>\n"
    "<html><head><meta charset=\"utf-8\"><title>gev chat</title>\n"
    "<style>\n"
    "body{font:15px system-ui,sans-serif;margin:2em auto;max-width:40em;"
    "color:#222}\n"
    "#log{border:1px solid #bbb;border-radius:6px;height:18em;"
    "overflow-y:auto;padding:.5em;background:#fafafa}\n"
    "#log div{padding:.15em 0}\n"
    ".sys{color:#777;font-style:italic}\n"
    "form{display:flex;gap:.5em;margin-top:.5em}\n"
    "#msg{flex:1;padding:.4em}\n"
    "</style></head><body>\n"
    "<h1>gev chat</h1>\n"
    "<p id=\"state\">connecting...</p>\n"
    "<div id=\"log\"></div>\n"
    "<form id=\"f\"><input id=\"msg\" autocomplete=\"off\" "
    "placeholder=\"say something\"><button id=\"send\">Send</button></form>\n"
    "<script>\n"
    "const log = document.getElementById('log');\n"
    "const state = document.getElementById('state');\n"
    "function line(text) {\n"
    "  const d = document.createElement('div');\n"
    "  d.textContent = text;\n"
    "  if (text.startsWith('* ')) d.className = 'sys';\n"
    "  log.appendChild(d);\n"
    "  log.scrollTop = log.scrollHeight;\n"
    "}\n"
    "const ws = new WebSocket('ws://' + location.host + '/chat');\n"
    "ws.onopen = () => { state.textContent = 'connected'; };\n"
    "ws.onmessage = (e) => line(e.data);\n"
    "ws.onclose = (e) => { state.textContent = 'closed ' + e.code; };\n"
    "document.getElementById('f').onsubmit = (e) => {\n"
    "  e.preventDefault();\n"
    "  const m = document.getElementById('msg');\n"
    "  if (m.value && ws.readyState === 1) ws.send(m.value);\n"
    "  m.value = '';\n"
    "};\n"
    "</script></body></html>\n";

#endif
