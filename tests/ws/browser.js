// browser.js URL [SCREENSHOT] - headless Chromium (Debian chromium, driven
// by playwright-core; never a downloaded browser) opens the chat page of
// examples/websocket in two tabs, sends a message from the first, sees it
// in the second, and sees the server's "* N online" pushes in both.
// Exits 0 on success, 1 with a reason otherwise.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const url = process.argv[2];
const shot = process.argv[3];
const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gev-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium', headless: true, args: flags,
    viewport: { width: 760, height: 560 },
  });
  try {
    const a = ctx.pages()[0] || await ctx.newPage();
    const b = await ctx.newPage();
    for (const p of [a, b]) {
      await p.goto(url);
      await p.waitForFunction(
        () => document.getElementById('state').textContent === 'connected',
        null, { timeout: 10000 });
    }
    await a.fill('#msg', 'hello from tab 1');
    await a.click('#send');
    for (const p of [a, b]) {
      await p.waitForFunction(() => [...document.querySelectorAll('#log div')]
        .some((d) => d.textContent === 'hello from tab 1'), null,
      { timeout: 10000 });
      await p.waitForFunction(() => [...document.querySelectorAll('#log div')]
        .some((d) => d.textContent === '* 2 online'), null, { timeout: 10000 });
    }
    await b.fill('#msg', 'and hello back from tab 2');
    await b.click('#send');
    await a.waitForFunction(() => [...document.querySelectorAll('#log div')]
      .some((d) => d.textContent === 'and hello back from tab 2'), null,
    { timeout: 10000 });
    if (shot) await a.screenshot({ path: shot });
    console.log('browser: two tabs chatted, pushes seen: ok');
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error('browser: ' + e.message); process.exit(1); });
