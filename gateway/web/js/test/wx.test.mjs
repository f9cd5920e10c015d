// The mini-program adapter, through a shim of the wx socket API built on a
// real WebSocket, so the adapter's own code runs against the real server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WS from 'ws';
import { PushgateClient, wxSocket } from '../pushgate.mjs';
import { start, waitFor } from './server.mjs';
import { api } from './api.mjs';
import { hs256, collect } from './util.mjs';

// wxShim implements wx.connectSocket and its SocketTask the way the
// mini-program runtime does: callbacks registered with onOpen/onMessage/
// onClose/onError, send({data}), close({code, reason}).
function wxShim(calls) {
  return {
    connectSocket({ url, header, protocols }) {
      calls.push({ url, header, protocols });
      const ws = new WS(url, protocols, { headers: header });
      return {
        onOpen(cb) { ws.on('open', () => cb({ header: {} })); },
        onMessage(cb) { ws.on('message', (data, isBinary) => cb({ data: isBinary ? data.buffer : data.toString() })); },
        onClose(cb) { ws.on('close', (code, reason) => cb({ code, reason: reason.toString() })); },
        onError(cb) { ws.on('error', (e) => cb({ errMsg: e.message })); },
        send({ data }) { ws.send(data); },
        close({ code, reason }) { ws.close(code, reason); },
      };
    },
  };
}

test('wx adapter: token in the Authorization header, messages, acks, kick', async (t) => {
  const secret = 'mini-program-secret-of-32-bytes-or-more';
  const pg = await start(['--auth', 'jwt', '--jwt-secret', secret]);
  t.after(() => pg.stop());
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  const calls = [];
  const now = Math.floor(Date.now() / 1000);
  const token = hs256(secret, { sub: 'shop-7', iat: now, exp: now + 3600 });
  const c = new PushgateClient({ url: `ws://${pg.http}/ws`, token, headerToken: true, socket: wxSocket(wxShim(calls)) });
  const ev = collect(c);
  c.connect();
  await waitFor('connected', () => c.state === 'connected');
  assert.equal(calls[0].header.Authorization, 'Bearer ' + token);
  assert.ok(!calls[0].url.includes('token='), 'the token must not be in the URL');
  assert.deepEqual(calls[0].protocols, ['pushgate.v1']);

  const json = '{"type":2,"orderId":1786543212345678901,"content":"顾客催单"}';
  await backend.sendToUser({ user_id: 'shop-7', message: { type: 'order.remind', json, ttl: { seconds: 60 } } });
  await waitFor('message', () => ev.messages.length === 1);
  assert.equal(ev.messages[0].type, 'order.remind');
  assert.equal(ev.messages[0].data.content, '顾客催单');
  // Acked automatically: the inbox is empty.
  await waitFor('acked', async () => /^pushgate_messages_acked_total 1$/m.test(await (await fetch(`http://${pg.http}/metrics`)).text()));

  await backend.disconnect({ user_id: 'shop-7' });
  await waitFor('closed', () => c.state === 'closed');
  assert.equal(ev.closes[0].code, 4100);
  assert.equal(calls.length, 1, 'reconnected after a kick');
});
