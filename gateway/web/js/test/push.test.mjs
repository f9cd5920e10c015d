// Offline push in headless Chromium: "a new order while the admin page is
// closed", end to end. pushgate escalates to a loopback Web Push service
// (which checks VAPID and decrypts the body as a browser's would); the
// test hands the decrypted push to the browser's service worker through
// the DevTools protocol (ServiceWorker.deliverPushMessage), as the push
// service's connection to the browser would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { start, waitFor, binary, artifacts, chromiumPath, chromiumArgs } from './server.mjs';
import { api } from './api.mjs';
import { pushService } from './webpush.mjs';

const metric = async (http, series) => {
  const text = await (await fetch(`http://${http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.split(' ')[1]) : 0;
};

test('a new order while the admin page is closed: one system notification, the order once in the inbox', async (t) => {
  // A key pair from "pushgate vapid".
  const out = execFileSync(binary, ['vapid'], { encoding: 'utf8' });
  const [, priv, pub] = /^private key: (\S+)\npublic key: {2}(\S+)\n$/.exec(out);
  // The emulated push service listens on loopback, a private address:
  // allowed here, refused by default.
  const pg = await start(['--vapid-private-key', priv, '--vapid-subject', 'mailto:ops@example.com', '--notify-poll', '100ms',
    '--notify-allow-private']);
  t.after(() => pg.stop());
  const origin = `http://${pg.http}`;
  assert.equal(await (await fetch(`${origin}/push/vapid-public-key`)).text(), pub);
  const ps = await pushService(pub);
  t.after(() => ps.close());
  const backend = api(pg.grpc);
  t.after(() => backend.close());

  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  t.after(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  await context.grantPermissions(['notifications'], { origin });
  const cdp = await context.newCDPSession(await context.newPage());
  const registrations = [];
  cdp.on('ServiceWorker.workerRegistrationUpdated', (e) => registrations.push(...e.registrations));
  await cdp.send('ServiceWorker.enable');

  // The merchant's admin page registers the served service worker, and the
  // subscription is handed to pushgate as merchant-42's target.
  let page = await context.newPage();
  await page.goto(origin + '/');
  await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');
  await page.evaluate(async () => { await navigator.serviceWorker.register('/pushgate-sw.js'); await navigator.serviceWorker.ready; });
  const sub = ps.subscribe();
  await backend.addPushTarget({ user_id: 'merchant-42', target: { webpush: { endpoint: sub.json.endpoint, p256dh: sub.json.keys.p256dh, auth: sub.json.keys.auth } } });
  const reg = await waitFor('the registration', () => registrations.find((r) => r.scopeURL === origin + '/' && !r.isDeleted));

  // The page is closed; the merchant is offline.
  await page.close();
  await waitFor('merchant offline', async () => {
    const p = await backend.getPresence({ user_ids: ['merchant-42'] });
    return p.users[0].connections === 0;
  });

  // The order service sends the order with a ttl and an escalation.
  const order = '{"type":1,"orderId":1786543212345678901,"content":"订单号: 20261122001"}';
  const sent = await backend.sendToUser({ user_id: 'merchant-42', message: {
    type: 'order.paid', json: order, ttl: { seconds: 3600 },
    notification: { title: 'New order', body: '订单号: 20261122001', url: '/', tag: 'order-20261122001', urgency: 'high' },
    escalation: { after: { seconds: 2 } },
  } });
  assert.equal(sent.online, false);
  const push = await ps.next();
  const payload = JSON.parse(push.payload);
  assert.deepEqual(payload, { title: 'New order', body: '订单号: 20261122001', url: '/', tag: 'order-20261122001', message_id: sent.message_id, user_id: 'merchant-42' });
  assert.equal(push.urgency, 'high');

  // The push service hands it to the browser: a system notification.
  await cdp.send('ServiceWorker.deliverPushMessage', { origin, registrationId: reg.registrationId, data: push.payload.toString() });

  // The merchant opens the page: the notification is there, and the order
  // is in the inbox, once.
  page = await context.newPage();
  const fromWorker = [];
  await page.exposeFunction('seen', (m) => fromWorker.push(m));
  await page.addInitScript(() => navigator.serviceWorker.addEventListener('message', (e) => window.seen(e.data)));
  await page.goto(origin + '/');
  const notes = await page.evaluate(async () => {
    const r = await navigator.serviceWorker.ready;
    return (await r.getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }));
  });
  assert.deepEqual(notes, [{ title: 'New order', body: '订单号: 20261122001', tag: 'order-20261122001',
    data: { url: '/', message_id: sent.message_id, user_id: 'merchant-42' } }]);
  await page.waitForSelector(`li.msg[data-id="${sent.message_id}"] .card`);
  await page.screenshot({ path: path.join(artifacts, 'push-order-after-notification.png'), fullPage: true });

  // A click on the notification comes to the page already showing its url
  // (the worker focuses it; with no such page it opens the url).
  const [sw] = context.serviceWorkers();
  await sw.evaluate(async () => {
    const [n] = await self.registration.getNotifications();
    self.dispatchEvent(new NotificationEvent('notificationclick', { notification: n }));
  });
  const click = await waitFor('the click reaching the page', () => fromWorker.find((m) => m.type === 'pushgate.click'));
  assert.equal(click.data.message_id, sent.message_id);
  assert.deepEqual(await page.evaluate(async () => (await (await navigator.serviceWorker.ready).getNotifications()).length), 0, 'the clicked notification is closed');

  // A push while the page is open: the worker tells the page too.
  await cdp.send('ServiceWorker.deliverPushMessage', { origin, registrationId: reg.registrationId, data: JSON.stringify({ title: 'Hello', url: '/' }) });
  await waitFor('the page told', () => fromWorker.find((m) => m.type === 'pushgate.push' && m.push.title === 'Hello'));

  // Nothing more: one push to the push service, nothing pending, and the
  // order shown once.
  await waitFor('nothing pending', async () => (await metric(pg.http, 'pushgate_escalations_pending')) === 0);
  await new Promise((r) => setTimeout(r, 500)); // several polls
  assert.equal(ps.received.length, 1, 'a second push was sent');
  assert.deepEqual(ps.rejected, []);
  assert.equal(await metric(pg.http, 'pushgate_notify_sends_total{channel="webpush",result="sent"}'), 1);
  const shown = await page.$$eval(`li.msg[data-id="${sent.message_id}"]`, (els) => els.length);
  assert.equal(shown, 1);
});

test('enablePush: the demo page registers the worker, subscribes with the served key and hands the subscription over', async (t) => {
  const out = execFileSync(binary, ['vapid'], { encoding: 'utf8' });
  const [, priv, pub] = /^private key: (\S+)\npublic key: {2}(\S+)\n$/.exec(out);
  const pg = await start(['--vapid-private-key', priv, '--vapid-subject', 'mailto:ops@example.com']);
  t.after(() => pg.stop());
  const origin = `http://${pg.http}`;
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  const ps = await pushService(pub);
  t.after(() => ps.close());
  // A subscription as a push service would make it. Headless Chromium has
  // no push service of its own to reach from here, so pushManager.subscribe
  // answers with this one and records what it was asked.
  const keys = ps.subscribe().json.keys;
  const sub = { endpoint: 'https://push.example.net/wpush/v2/merchant-42', expirationTime: null, keys };

  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  t.after(() => browser.close());
  const context = await browser.newContext();
  await context.grantPermissions(['notifications'], { origin });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e));
  await page.addInitScript((s) => {
    window.__subscribeAsked = [];
    PushManager.prototype.getSubscription = async () => null;
    PushManager.prototype.subscribe = async function (opts) {
      window.__subscribeAsked.push({ userVisibleOnly: opts.userVisibleOnly, key: opts.applicationServerKey });
      return { toJSON: () => s };
    };
  }, sub);
  await page.goto(origin + '/');
  await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');
  await page.click('#notify');
  await page.waitForFunction(() => document.getElementById('log').textContent.includes('notifications on: push target webpush:'));
  assert.deepEqual(await page.evaluate(() => window.__subscribeAsked), [{ userVisibleOnly: true, key: pub }]);
  assert.equal(await page.evaluate(async () => (await navigator.serviceWorker.getRegistration('/')).active.scriptURL), origin + '/pushgate-sw.js');
  const l = await backend.listPushTargets({ user_id: 'merchant-42' });
  assert.equal(l.targets.length, 1);
  assert.deepEqual(l.targets[0].webpush, { endpoint: sub.endpoint, p256dh: keys.p256dh, auth: keys.auth });
  assert.match(await page.textContent('#log'), new RegExp('push target ' + l.targets[0].id));
  await page.screenshot({ path: path.join(artifacts, 'push-enabled.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});
