// The admin page in headless Chromium against the real binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import WebSocket from 'ws';
import { chromium } from 'playwright-core';
import { start, waitFor, artifacts, chromiumPath, chromiumArgs } from './server.mjs';

function client(url) {
  const ws = new WebSocket(url);
  const got = [];
  const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  ws.on('message', (data) => got.push(data.toString()));
  return new Promise((resolve, reject) => {
    ws.on('open', () => resolve({ ws, got, closed }));
    ws.on('error', reject);
  });
}

test('admin page: totals, search, test message, kick', async (t) => {
  const pg = await start(['--ops-addr', '127.0.0.1:0']);
  t.after(() => pg.stop());
  const alice1 = await client(`ws://${pg.http}/ws/alice`);
  const alice2 = await client(`ws://${pg.http}/ws/alice`);
  const bob = await client(`ws://${pg.http}/ws/bob`);

  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  await page.goto(`http://${pg.ops}/admin`);

  // Live totals.
  await page.waitForFunction(() => document.getElementById('t-conns').textContent === '3');
  assert.equal(await page.textContent('#t-users'), '2');
  await page.waitForSelector('#users tr[data-user="alice"]');
  assert.equal(await page.locator('#users tr').count(), 2);

  // Search.
  await page.fill('#q', 'ali');
  await page.click('#search');
  await page.waitForFunction(() => document.querySelectorAll('#users tr').length === 1);
  assert.equal(await page.getAttribute('#users tr', 'data-user'), 'alice');
  assert.equal(await page.textContent('#users tr td:nth-child(2)'), '2');

  // The test-message form delivers to the user, byte for byte.
  const text = '{"type":2,"orderId":1786543212345678901,"content":"催单"}';
  await page.selectOption('#target', 'user');
  await page.fill('#dest', 'bob');
  await page.fill('#text', text);
  await page.click('#send button[type=submit]');
  await page.waitForFunction(() => /sent .* to 1 connection/.test(document.getElementById('result').textContent));
  await waitFor('bob got the message', () => bob.got.includes(text));
  assert.deepEqual(alice1.got, []);

  await page.screenshot({ path: path.join(artifacts, 'admin.png'), fullPage: true });

  // Kicking alice closes both her connections with 4100.
  await page.click('#users tr[data-user="alice"] button.kick');
  assert.equal(await alice1.closed, 4100);
  assert.equal(await alice2.closed, 4100);
  await page.waitForFunction(() => /kicked alice: 2 connection/.test(document.getElementById('result').textContent));
  await page.waitForFunction(() => document.getElementById('t-conns').textContent === '1');
  await page.screenshot({ path: path.join(artifacts, 'admin-after-kick.png'), fullPage: true });
  bob.ws.close();
});

test('admin page refuses without the password when one is set', async (t) => {
  const pg = await start(['--admin-password', 'correct horse battery']);
  t.after(() => pg.stop());
  const noAuth = await fetch(`http://${pg.http}/admin/api/stats`);
  assert.equal(noAuth.status, 401);
  const ok = await fetch(`http://${pg.http}/admin/api/stats`, {
    headers: { Authorization: 'Basic ' + Buffer.from('admin:correct horse battery').toString('base64') },
  });
  assert.equal(ok.status, 200);
  assert.equal((await ok.json()).connections, 0);
  // A cross-site form post (not JSON) is refused even when authenticated.
  const form = await fetch(`http://${pg.http}/admin/api/kick`, {
    method: 'POST', body: 'user_id=x',
    headers: { Authorization: 'Basic ' + Buffer.from('admin:correct horse battery').toString('base64'), 'Content-Type': 'application/x-www-form-urlencoded' },
  });
  assert.equal(form.status, 415);
});

test('admin page in cluster mode: cluster and node numbers labelled, node column, charts, phone width', async (t) => {
  const { startRedis } = await import('./server.mjs');
  const redis = await startRedis();
  t.after(() => redis.stop());
  const node = (name) => start(['--engine', 'redis', '--redis-url', redis.url, '--node-name', name, '--ops-addr', '127.0.0.1:0']);
  const a = await node('node-a');
  t.after(() => a.stop());
  const b = await node('node-b');
  t.after(() => b.stop());
  const socks = [await client(`ws://${a.http}/ws/alice`), await client(`ws://${b.http}/ws/alice`), await client(`ws://${b.http}/ws/bob`)];
  t.after(() => socks.forEach((s) => s.ws.close()));

  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e));
  await page.goto(`http://${a.ops}/admin`);

  // The whole cluster's numbers, and this node's, each under its heading.
  await page.waitForFunction(() => document.getElementById('t-conns').textContent === '3');
  assert.equal(await page.textContent('#g-all'), 'Whole cluster, now');
  assert.equal(await page.textContent('#g-node'), 'This node (node-a)');
  assert.equal(await page.textContent('#t-users'), '2');
  await page.waitForFunction(() => document.getElementById('t-node-conns').textContent === '1');
  assert.equal(await page.textContent('#t-node-users'), '1');
  assert.ok(await page.isVisible('#node-conns'));
  assert.match(await page.textContent('#c-conns-label'), /whole cluster/);
  assert.match(await page.textContent('#c-rate-label'), /this node/);

  // The node column says where each user's connections are.
  await page.waitForSelector('#users tr[data-user="bob"]');
  assert.equal(await page.textContent('#users tr[data-user="alice"] td.node'), 'node-a (1), others');
  assert.equal(await page.textContent('#users tr[data-user="bob"] td.node'), 'other node(s)');

  // Messages flow for a while: the charts fill in (a sample every 2 s).
  const sendSome = async () => {
    for (let i = 0; i < 5; i++) {
      await page.evaluate(() => fetch('/admin/api/send', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ target: 'user', user_id: 'alice', text: 'tick' }) }));
    }
  };
  await sendSome();
  await page.waitForFunction(() => document.querySelector('#c-conns polyline') !== null);
  await sendSome();
  await page.waitForFunction(() => document.querySelectorAll('#c-rate polyline').length === 1 &&
    document.querySelector('#c-rate polyline').getAttribute('points').split(' ').length >= 3, null, { timeout: 30000 });
  assert.match(await page.textContent('#c-conns-now'), /now 3/);
  await page.screenshot({ path: path.join(artifacts, 'admin-cluster.png'), fullPage: true });

  // At phone width nothing is wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForFunction(() => document.documentElement.scrollWidth <= 390);
  assert.ok(await page.isVisible('#users tr[data-user="alice"] button.kick'));
  await page.screenshot({ path: path.join(artifacts, 'admin-cluster-phone.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});
