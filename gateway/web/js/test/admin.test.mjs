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
