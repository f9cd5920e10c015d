// The uni-app and Taro adapters, through shims of uni.connectSocket and
// Taro.connectSocket built on a real WebSocket, so the adapters' own code
// runs against the real server. Both ask for the envelope format in the
// URL (?protocol=pushgate.v1) and send no Sec-WebSocket-Protocol, as those
// runtimes need on some platforms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WS from 'ws';
import { PushgateClient, uniSocket, taroSocket } from '../pushgate.mjs';
import { start, waitFor } from './server.mjs';
import { api } from './api.mjs';
import { hs256, collect } from './util.mjs';

// taskOver wraps a real WebSocket in the SocketTask both runtimes hand out:
// callbacks registered with onOpen/onMessage/onClose/onError, send({data}),
// close({code, reason}).
function taskOver(url, header, protocols, rec) {
  const ws = new WS(url, protocols || [], { headers: header });
  rec.sockets.push(ws);
  ws.on('upgrade', (res) => rec.answered.push(res.headers['sec-websocket-protocol'] || ''));
  return {
    onOpen(cb) { ws.on('open', () => cb({ header: {} })); },
    onMessage(cb) { ws.on('message', (data, isBinary) => cb({ data: isBinary ? data.buffer : data.toString() })); },
    onClose(cb) { ws.on('close', (code, reason) => cb({ code, reason: reason.toString() })); },
    onError(cb) { ws.on('error', (e) => cb({ errMsg: e.message })); },
    send({ data }) { ws.send(data); },
    close({ code, reason }) { ws.close(code, reason); },
  };
}

function recorder() {
  return { calls: [], sockets: [], answered: [] };
}

// uniShim behaves as uni-app does: connectSocket returns the SocketTask only
// when given success, fail or complete (otherwise a Promise), and calls
// complete once the connection attempt is made.
function uniShim(rec) {
  return {
    connectSocket(opts) {
      rec.calls.push(opts);
      const task = taskOver(opts.url, opts.header, opts.protocols, rec);
      if (!opts.success && !opts.fail && !opts.complete) return Promise.resolve({ errMsg: 'connectSocket:ok' });
      setTimeout(() => opts.complete && opts.complete({ errMsg: 'connectSocket:ok' }), 0);
      return task;
    },
  };
}

// taroShim behaves as Taro does: connectSocket returns a Promise of the
// SocketTask. failNext makes the next call reject, as Taro does when the
// runtime refuses to open a socket.
function taroShim(rec) {
  return {
    failNext: false,
    connectSocket(opts) {
      rec.calls.push(opts);
      if (this.failNext) {
        this.failNext = false;
        return Promise.reject(new Error('connectSocket:fail'));
      }
      return new Promise((resolve) => setTimeout(() => resolve(taskOver(opts.url, opts.header, opts.protocols, rec)), 5));
    },
  };
}

const secret = 'mini-program-secret-of-32-bytes-or-more';

async function acked(pg) {
  const m = /^pushgate_messages_acked_total (\d+)$/m.exec(await (await fetch(`http://${pg.http}/metrics`)).text());
  return m ? Number(m[1]) : 0;
}

for (const [name, makeShim, adapter] of [['uni-app', uniShim, uniSocket], ['Taro', taroShim, taroSocket]]) {
  test(`${name} adapter: envelope by query parameter, header token, messages, acks, resume, kick`, async (t) => {
    const pg = await start(['--auth', 'jwt', '--jwt-secret', secret]);
    t.after(() => pg.stop());
    const backend = api(pg.grpc);
    t.after(() => backend.close());
    const rec = recorder();
    const now = Math.floor(Date.now() / 1000);
    const token = hs256(secret, { sub: 'shop-7', iat: now, exp: now + 3600 });
    const c = new PushgateClient({
      url: `ws://${pg.http}/ws`, token, headerToken: true, socket: adapter(makeShim(rec)), minDelay: 50, maxDelay: 200,
    });
    const ev = collect(c);
    c.connect();
    await waitFor('connected', () => c.state === 'connected' && c.userId === 'shop-7');
    const first = rec.calls[0];
    assert.equal(first.header.Authorization, 'Bearer ' + token);
    assert.ok(!first.url.includes('token='), 'the token must not be in the URL');
    assert.ok(new URL(first.url).searchParams.get('protocol') === 'pushgate.v1', first.url);
    assert.equal(first.protocols, undefined, 'no subprotocol may be offered');
    assert.equal(rec.answered[0], '', 'the server answered a subprotocol that was not offered');

    const json = '{"type":2,"orderId":1786543212345678901,"content":"顾客催单"}';
    await backend.sendToUser({ user_id: 'shop-7', message: { type: 'order.remind', json, ttl: { seconds: 60 } } });
    await waitFor('message', () => ev.messages.length === 1);
    assert.equal(ev.messages[0].type, 'order.remind');
    assert.equal(ev.messages[0].data.content, '顾客催单');
    assert.ok(ev.messages[0].id, 'envelope messages carry ids');
    await waitFor('acked', async () => (await acked(pg)) === 1);

    // The network drops: the client reconnects through the adapter and
    // resumes after the last message, still by query parameter.
    rec.sockets[0].terminate();
    await waitFor('disconnected', () => ev.states.includes('disconnected'));
    await backend.sendToUser({ user_id: 'shop-7', message: { type: 'order.remind', text: 'while away', ttl: { seconds: 60 } } });
    await waitFor('resumed message', () => ev.messages.length === 2, 20000);
    assert.equal(ev.messages[1].data, 'while away');
    const again = new URL(rec.calls[rec.calls.length - 1].url);
    assert.equal(again.searchParams.get('protocol'), 'pushgate.v1');
    assert.equal(again.searchParams.get('last_id'), ev.messages[0].id);

    await backend.disconnect({ user_id: 'shop-7' });
    await waitFor('closed', () => c.state === 'closed');
    assert.equal(ev.closes[ev.closes.length - 1].code, 4100);
    const calls = rec.calls.length;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(rec.calls.length, calls, 'reconnected after a kick');
  });
}

test('Taro adapter: a refused connectSocket is a 1006 close and a retry; close before the task arrives closes it', async (t) => {
  const pg = await start();
  t.after(() => pg.stop());
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  const rec = recorder();
  const shim = taroShim(rec);
  shim.failNext = true;
  const c = new PushgateClient({ url: `ws://${pg.http}/ws`, userId: 'kiosk-1', socket: taroSocket(shim), minDelay: 50, maxDelay: 200 });
  const ev = collect(c);
  c.connect();
  await waitFor('connected after a refused attempt', () => c.state === 'connected');
  assert.equal(ev.closes[0].code, 1006);
  assert.ok(ev.closes[0].willReconnect);
  assert.equal(rec.calls.length, 2);
  c.close();
  await waitFor('offline', async () => (await backend.getPresence({ user_ids: ['kiosk-1'] })).users[0].connections === 0);

  // Closed while Taro is still opening the socket: once the task arrives
  // it is closed, and the user does not stay online.
  const rec2 = recorder();
  const c2 = new PushgateClient({ url: `ws://${pg.http}/ws`, userId: 'kiosk-2', socket: taroSocket(taroShim(rec2)) });
  c2.connect();
  await waitFor('connectSocket called', () => rec2.calls.length === 1);
  c2.close();
  await waitFor('task closed', () => rec2.sockets.length === 1 && rec2.sockets[0].readyState === WS.CLOSED);
  await waitFor('kiosk-2 offline', async () => (await backend.getPresence({ user_ids: ['kiosk-2'] })).users[0].connections === 0);
});
