// The demo page, built on pushgate.js, in headless Chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { start, waitFor, artifacts, chromiumPath, chromiumArgs } from './server.mjs';
import { api } from './api.mjs';
import { proxy } from './util.mjs';

const ttl = { seconds: 600 };
const order = (n, type = 1) => `{"type":${type},"orderId":${1786543212345678901n + BigInt(n)},"content":"订单号: 2026112200${n}"}`;

test('demo page: an order pops up; after a cut, what was sent meanwhile appears once', async (t) => {
  const pg = await start();
  t.after(() => pg.stop());
  // The browser reaches pushgate through a proxy we can cut.
  const px = await proxy(pg.http);
  t.after(() => px.close());
  const backend = api(pg.grpc);
  t.after(() => backend.close());

  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e));
  await page.goto(`http://${px.addr}/`);
  await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');

  // The backend's SendToUser pops up an order card.
  const r = await backend.sendToUser({ user_id: 'merchant-42', message: { type: 'order.paid', json: order(1), ttl } });
  assert.equal(r.delivered_connections, 1);
  await page.waitForSelector(`li.msg[data-id="${r.message_id}"] .card`);
  assert.match(await page.textContent(`li.msg[data-id="${r.message_id}"] .card`), /New order.*订单号: 20261122001/);
  await page.screenshot({ path: path.join(artifacts, 'demo-order.png'), fullPage: true });

  // The network goes away; three orders arrive meanwhile (kept with a ttl).
  px.down();
  await page.waitForFunction(() => document.getElementById('state').textContent !== 'connected');
  const ids = [];
  for (let n = 2; n <= 4; n++) {
    const s = await backend.sendToUser({ user_id: 'merchant-42', message: { type: 'order.paid', json: order(n, n === 4 ? 2 : 1), ttl } });
    assert.equal(s.online, false);
    ids.push(s.message_id);
  }
  px.up();
  await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');
  for (const id of ids) await page.waitForSelector(`li.msg[data-id="${id}"] .card`);
  // Once each, and nothing else: 4 messages in all.
  await backend.sendToUser({ user_id: 'merchant-42', message: { text: 'end' } });
  await page.waitForFunction(() => document.getElementById('messages').textContent.includes('end'));
  const shown = await page.$$eval('li.msg', (els) => els.map((e) => e.dataset.id));
  assert.equal(shown.length, 5);
  assert.equal(new Set(shown).size, 5, 'a message appeared twice');
  assert.match(await page.textContent(`li.msg[data-id="${ids[2]}"] .card`), /Customer reminder/);
  assert.match(await page.textContent('#log'), /resumed: nothing missed/);
  await page.screenshot({ path: path.join(artifacts, 'demo-after-reconnect.png'), fullPage: true });

  // The backend panel sends through the development endpoint.
  await page.fill('#payload', order(5));
  await page.click('#send button[type=submit]');
  await page.waitForFunction(() => /delivered to 1 connection/.test(document.getElementById('sent').textContent));
  await page.waitForFunction(() => document.querySelectorAll('li.msg').length === 6);
  assert.deepEqual(pageErrors, []);
});

test('demo page at 400 px: usable, nothing wider than the screen, a favicon', async (t) => {
  const pg = await start();
  t.after(() => pg.stop());
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 400, height: 860 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e));
  await page.goto(`http://${pg.http}/`);
  await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');
  const r = await backend.sendToUser({ user_id: 'merchant-42', message: { type: 'order.paid', json: order(1), ttl } });
  await page.waitForSelector(`li.msg[data-id="${r.message_id}"] .card`);
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 400), 'the page is wider than 400 px');
  for (const sel of ['#go', '#stop', '#send button[type=submit]', '#payload']) {
    const box = await page.locator(sel).boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 400, `${sel} is off screen: ${JSON.stringify(box)}`);
  }
  const icon = await page.getAttribute('link[rel=icon]', 'href');
  const res = await fetch(new URL(icon, `http://${pg.http}/`));
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^image\/svg\+xml/);
  await page.screenshot({ path: path.join(artifacts, 'demo-400px.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});

test('demo page with --auth jwt: says why it cannot connect instead of retrying, connects with a token', async (t) => {
  const { hs256 } = await import('./util.mjs');
  const secret = 'demo-page-secret-of-32-bytes-or-more!';
  const pg = await start(['--auth', 'jwt', '--jwt-secret', secret]);
  t.after(() => pg.stop());
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 400, height: 860 } });
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  await page.goto(`http://${pg.http}/`);

  // No token: the page explains and does not try.
  assert.match(await page.textContent('#auth-note'), /--auth jwt/);
  await page.click('#go');
  await page.waitForFunction(() => /No token/.test(document.getElementById('auth-note').textContent));
  assert.equal(sockets.length, 0);

  // A token signed with another key: one refused attempt, then it stops
  // and says why (a retry loop would open a socket every few hundred ms).
  const now = Math.floor(Date.now() / 1000);
  await page.fill('#token', hs256('another-secret-of-32-bytes-or-more!!', { sub: 'merchant-42', iat: now, exp: now + 600 }));
  await page.click('#go');
  await page.waitForFunction(() => /refused the connection/.test(document.getElementById('auth-note').textContent));
  assert.equal(await page.textContent('#state'), 'closed');
  await page.waitForTimeout(1500);
  assert.equal(sockets.length, 1, `attempts: ${sockets.length}`);
  await page.screenshot({ path: path.join(artifacts, 'demo-jwt-refused.png'), fullPage: true });

  // A good token connects, as the token's user.
  await page.fill('#token', hs256(secret, { sub: 'merchant-9', iat: now, exp: now + 600 }));
  await page.click('#go');
  await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');
  assert.ok(!sockets[1].includes('/ws/'), 'the user comes from the token, not the URL');
  const r = await backend.sendToUser({ user_id: 'merchant-9', message: { type: 'order.paid', json: order(7), ttl } });
  await page.waitForSelector(`li.msg[data-id="${r.message_id}"] .card`);
  assert.match(await page.textContent('#cmd'), /"user_id":"merchant-9"/);
});

test('demo page: a to-do item added on one page appears on every page, with who added it; each shows who is looking', async (t) => {
  const pg = await start(['--client-publish-topics', 'demo:todo', '--client-presence-topics', 'demo:todo']);
  t.after(() => pg.stop());
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  t.after(() => browser.close());
  const open = async (user) => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e));
    await page.goto(`http://${pg.http}/`);
    await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');
    await page.click('#stop');
    await page.waitForFunction(() => document.getElementById('state').textContent === 'closed');
    await page.fill('#user', user);
    await page.click('#go');
    await page.waitForFunction((u) => /connected as /.test(document.getElementById('log').textContent) &&
      document.getElementById('log').textContent.includes('connected as ' + u), user);
    return { page, errors };
  };
  const a = await open('merchant-1');
  const b = await open('merchant-2');
  // The subscribe reply comes after the hello: wait until a publish reaches b.
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  await waitFor('both pages subscribed', async () => (await backend.publish({ topic: 'demo:todo', message: { json: '{"text":"from the backend"}' } })).delivered_connections === '2');
  await a.page.fill('#todo-text', 'buy milk');
  await a.page.click('#todo button[type=submit]');
  for (const p of [a.page, b.page]) {
    await p.waitForFunction(() => [...document.querySelectorAll('#todos li')].some((li) => li.textContent === 'buy milkadded by merchant-1'));
  }
  assert.equal(await a.page.inputValue('#todo-text'), '');
  // Both users are listed as looking at the list, on both pages (read
  // every few seconds; this server does not report joins and leaves).
  for (const p of [a.page, b.page]) {
    await p.waitForFunction(() => document.getElementById('todo-viewers').textContent === 'Looking at it: merchant-1, merchant-2');
  }
  await b.page.screenshot({ path: path.join(artifacts, 'demo-todo.png'), fullPage: true });
  // The to-do items are not in the message list.
  assert.equal(await b.page.$$eval('li.msg', (els) => els.length), 0);
  assert.deepEqual([...a.errors, ...b.errors], []);
});

test('demo page: a server that does not allow client publish says how to allow it', async (t) => {
  const pg = await start();
  t.after(() => pg.stop());
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(`http://${pg.http}/`);
  await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');
  await page.fill('#todo-text', 'buy milk');
  await page.click('#todo button[type=submit]');
  await page.waitForFunction(() => /--client-publish-topics demo:todo/.test(document.getElementById('todo-note').textContent));
  assert.equal(await page.$$eval('#todos li', (els) => els.length), 0);
  // Nor does it let pages read who is looking.
  await page.waitForFunction(() => /--client-presence-topics demo:todo/.test(document.getElementById('todo-viewers').textContent));
});
