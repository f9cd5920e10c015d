// The JavaScript client against the real binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PushgateClient, backoffDelay, isTerminal } from '../pushgate.mjs';
import { start, startRedis, waitFor } from './server.mjs';
import { api } from './api.mjs';
import { wsSocket, freePort, proxy, hs256, collect } from './util.mjs';

const ttl = { seconds: 600 };
const order = (n) => `{"type":1,"orderId":${1786543212345678901n + BigInt(n)},"content":"订单号: ${n}"}`;
const personal = (ev) => ev.messages.filter((m) => !m.topic && !m.broadcast);

test('backoff: full jitter, growing, capped', async (t) => {
  // The bounds, from the formula.
  for (let n = 0; n < 12; n++) {
    const cap = Math.min(30000, 500 * 2 ** n);
    assert.equal(backoffDelay(n, 500, 30000, () => 0.999999), Math.floor(0.999999 * cap));
    assert.equal(backoffDelay(n, 500, 30000, () => 0), 50);
  }
  // Live: against a port where nothing listens, attempts back off.
  const port = await freePort();
  const c = new PushgateClient({ url: `ws://127.0.0.1:${port}/ws`, userId: 'u', minDelay: 40, maxDelay: 320, socket: wsSocket });
  const ev = collect(c);
  c.connect();
  await waitFor('8 reconnect attempts', () => ev.reconnecting.length >= 8);
  c.close();
  const delays = ev.reconnecting.map((r) => r.delay);
  delays.forEach((d, n) => assert.ok(d <= Math.min(320, 40 * 2 ** n), `attempt ${n}: ${d} ms over its cap`));
  assert.ok(new Set(delays).size > 3, 'no jitter: ' + delays);
  assert.ok(Math.max(...delays.slice(4)) > Math.max(...delays.slice(0, 2)), 'no growth: ' + delays);
  assert.ok(isTerminal(4100) && isTerminal(4101) && !isTerminal(4000) && !isTerminal(1001));
});

test('a cut connection resumes with nothing lost or doubled', async (t) => {
  const pg = await start();
  t.after(() => pg.stop());
  const px = await proxy(pg.http);
  t.after(() => px.close());
  const backend = api(pg.grpc);
  t.after(() => backend.close());

  const c = new PushgateClient({ url: `ws://${px.addr}/ws`, userId: 'merchant-42', minDelay: 50, maxDelay: 200, socket: wsSocket });
  const ev = collect(c);
  c.connect();
  await waitFor('connected', () => c.state === 'connected');
  for (let i = 0; i < 3; i++) await backend.sendToUser({ user_id: 'merchant-42', message: { json: order(i), ttl } });
  await waitFor('3 live', () => personal(ev).length === 3);

  px.down(); // the network goes away, and stays away for a while
  await waitFor('disconnected', () => ev.states.includes('disconnected'));
  // Sent while the page is away: kept in the inbox (ttl).
  for (let i = 3; i < 8; i++) {
    const r = await backend.sendToUser({ user_id: 'merchant-42', message: { json: order(i), ttl } });
    assert.equal(r.online, false);
    assert.equal(r.stored, true);
  }
  await waitFor('a failed attempt', () => ev.reconnecting.length >= 2);
  px.up();
  await waitFor('all 8', () => personal(ev).length >= 8);
  await backend.sendToUser({ user_id: 'merchant-42', message: { text: 'end' } });
  await waitFor('end', () => ev.messages.some((m) => m.data === 'end'));
  c.close();

  const seen = personal(ev).filter((m) => m.data !== 'end').map((m) => m.data.content);
  assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7].map((n) => `订单号: ${n}`));
  // The JSON text keeps the 64-bit order id that JSON.parse rounds.
  assert.equal(personal(ev)[7].json, order(7));
  assert.match(personal(ev)[7].json, /"orderId":1786543212345678908,/);
  assert.equal(ev.recovered.length, 1);
  assert.deepEqual(ev.recovered[0], { recovered: true, replayed: 5 });
  // Stored messages were acked, so nothing waits in the inbox.
  await waitFor('inbox empty', async () => {
    const m = await (await fetch(`http://${pg.http}/metrics`)).text();
    return /^pushgate_inbox_messages 0$/m.test(m);
  });
});

test('a server restart: reconnects by itself; the memory engine reports recovered false', async (t) => {
  const port = await freePort();
  let pg = await start(['--http-addr', `127.0.0.1:${port}`]);
  const c = new PushgateClient({ url: `ws://127.0.0.1:${port}/ws`, userId: 'u1', minDelay: 50, maxDelay: 300, socket: wsSocket });
  const ev = collect(c);
  c.connect();
  await waitFor('connected', () => c.state === 'connected');
  let backend = api(pg.grpc);
  await backend.sendToUser({ user_id: 'u1', message: { json: '{"before":1}', ttl } });
  await waitFor('first message', () => ev.messages.length === 1);
  backend.close();
  await pg.stop();
  await waitFor('noticed', () => ev.closes.length >= 1);
  assert.equal(ev.closes[0].code, 1001);
  assert.equal(ev.closes[0].willReconnect, true);

  pg = await start(['--http-addr', `127.0.0.1:${port}`]);
  t.after(() => pg.stop());
  await waitFor('recovered event', () => ev.recovered.length === 1);
  assert.equal(ev.recovered[0].recovered, false, 'a new process cannot vouch for the old inbox');
  backend = api(pg.grpc);
  t.after(() => backend.close());
  await backend.sendToUser({ user_id: 'u1', message: { json: '{"after":1}' } });
  await waitFor('message after restart', () => ev.messages.some((m) => m.data && m.data.after === 1));
  c.close();
});

test('a server restart with the Redis engine: resumes with nothing lost', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const engine = ['--engine', 'redis', '--redis-url', redis.url];
  const port = await freePort();
  let pg = await start(['--http-addr', `127.0.0.1:${port}`, ...engine]);
  const other = await start(engine); // the node the backend calls meanwhile
  t.after(() => other.stop());
  const backend = api(other.grpc);
  t.after(() => backend.close());

  const c = new PushgateClient({ url: `ws://127.0.0.1:${port}/ws`, userId: 'merchant-42', minDelay: 50, maxDelay: 300, socket: wsSocket });
  const ev = collect(c);
  c.connect();
  await waitFor('connected', () => c.state === 'connected');
  for (let i = 0; i < 2; i++) await backend.sendToUser({ user_id: 'merchant-42', message: { json: order(i), ttl } });
  await waitFor('2 live', () => personal(ev).length === 2);

  await pg.stop(); // its node leaves the cluster; its inboxes stay in Redis
  await waitFor('noticed', () => ev.closes.length >= 1);
  for (let i = 2; i < 5; i++) {
    const r = await backend.sendToUser({ user_id: 'merchant-42', message: { json: order(i), ttl } });
    assert.equal(r.online, false);
    assert.equal(r.stored, true);
  }
  pg = await start(['--http-addr', `127.0.0.1:${port}`, ...engine]);
  t.after(() => pg.stop());
  await waitFor('recovered event', () => ev.recovered.length === 1);
  assert.deepEqual(ev.recovered[0], { recovered: true, replayed: 3 });
  await waitFor('all 5', () => personal(ev).length >= 5);
  c.close();
  assert.deepEqual(personal(ev).map((m) => m.data.content), [0, 1, 2, 3, 4].map((n) => `订单号: ${n}`));
});

test('subscriptions come back after a reconnect; sends made while connecting are delivered', async (t) => {
  const pg = await start(['--upstream-users', '*']);
  t.after(() => pg.stop());
  const px = await proxy(pg.http);
  t.after(() => px.close());
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  const watch = backend.watch({ kinds: ['EVENT_KIND_CLIENT_MESSAGE'] });
  const upstream = [];
  watch.on('data', (e) => upstream.push(e.client_message));
  watch.on('error', () => {});
  t.after(() => watch.cancel());
  await new Promise((r) => watch.on('metadata', r)); // the watch is in place

  const c = new PushgateClient({ url: `ws://${px.addr}/ws`, userId: 'team-7-member', minDelay: 50, maxDelay: 200, socket: wsSocket });
  const ev = collect(c);
  c.connect();
  // Both before the connection is up.
  const subscribed = c.subscribe('todo:team-7');
  const sent = c.send({ done: 'item-3' }, { type: 'todo.done', topic: 'todo:team-7' });
  assert.notEqual(c.state, 'connected');
  await subscribed;
  await sent;
  await waitFor('upstream message', () => upstream.length === 1);
  assert.equal(upstream[0].json, '{"done":"item-3"}');
  assert.equal(upstream[0].type, 'todo.done');

  let r = await backend.publish({ topic: 'todo:team-7', message: { json: '{"n":1}' } });
  assert.equal(Number(r.delivered_connections), 1);
  await waitFor('first publish', () => ev.messages.some((m) => m.topic === 'todo:team-7' && m.data.n === 1));

  px.cut();
  await waitFor('back', () => ev.states.filter((s) => s === 'connected').length === 2);
  r = await backend.publish({ topic: 'todo:team-7', message: { json: '{"n":2}' } });
  assert.equal(Number(r.delivered_connections), 1, 'the subscription did not survive the reconnect');
  await waitFor('second publish', () => ev.messages.some((m) => m.topic === 'todo:team-7' && m.data.n === 2));
  c.close();
});

test('a kicked client stops reconnecting', async (t) => {
  const pg = await start();
  t.after(() => pg.stop());
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  const c = new PushgateClient({ url: `ws://${pg.http}/ws`, userId: 'banned', minDelay: 20, maxDelay: 40, socket: wsSocket });
  const ev = collect(c);
  c.connect();
  await waitFor('connected', () => c.state === 'connected');
  const r = await backend.disconnect({ user_id: 'banned', reason: 'account suspended' });
  assert.equal(r.closed_connections, 1);
  await waitFor('closed', () => c.state === 'closed');
  assert.equal(ev.closes[0].code, 4100);
  assert.equal(ev.closes[0].willReconnect, false);
  // Many backoff periods later: still no attempt, nobody online.
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(ev.reconnecting.length, 0);
  const p = await backend.getPresence({ user_ids: ['banned'] });
  assert.equal(p.users[0].connections, 0);
});

test('close() called from a close handler stops the reconnecting', async (t) => {
  const pg = await start();
  t.after(() => pg.stop());
  const px = await proxy(pg.http);
  t.after(() => px.close());
  const c = new PushgateClient({ url: `ws://${px.addr}/ws`, userId: 'quitter', minDelay: 20, maxDelay: 40, socket: wsSocket });
  const ev = collect(c);
  c.on('close', (e) => { if (e.willReconnect) c.close(); });
  c.connect();
  await waitFor('connected', () => c.state === 'connected');
  px.cut();
  await waitFor('closed', () => c.state === 'closed');
  assert.equal(ev.closes[0].willReconnect, true);
  // Many backoff periods later: no attempt was made.
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(ev.reconnecting.length, 0);
  assert.equal(c.state, 'closed');
  assert.ok(!ev.states.slice(ev.states.indexOf('closed')).includes('connecting'), `states: ${ev.states}`);
});

test('tokens: the provider is asked again, and a refresh keeps the connection past expiry', async (t) => {
  const secret = 'a-test-secret-of-at-least-32-bytes!!';
  const pg = await start(['--auth', 'jwt', '--jwt-secret', secret, '--jwt-leeway', '0s']);
  t.after(() => pg.stop());
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  let minted = 0;
  const token = () => {
    minted++;
    const now = Math.floor(Date.now() / 1000);
    // 3 s at most, 2 s at least (exp is in whole seconds): the client
    // refreshes 1 s after it has the token, with a second to spare.
    return hs256(secret, { sub: 'merchant-9', iat: now, exp: now + 3 });
  };
  const c = new PushgateClient({ url: `ws://${pg.http}/ws`, token, socket: wsSocket });
  const ev = collect(c);
  c.connect();
  await waitFor('connected', () => c.state === 'connected');
  assert.equal(c.userId, 'merchant-9');
  // Past the first token's 3 s: the client refreshed it in time.
  await waitFor('a refresh', () => minted >= 2, 5000);
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal(c.state, 'connected');
  assert.deepEqual(ev.closes, []);
  await backend.sendToUser({ user_id: 'merchant-9', message: { text: 'still here' } });
  await waitFor('message', () => ev.messages.some((m) => m.data === 'still here'));
  c.close();
});
