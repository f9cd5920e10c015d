// Client publish and exclude_connection_ids through the JavaScript client,
// against the real binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PushgateClient } from '../pushgate.mjs';
import { start, waitFor } from './server.mjs';
import { api } from './api.mjs';
import { wsSocket, hs256, collect } from './util.mjs';

const secret = 'k3Jd9QwLx7Vb2NcR5tYh8ZpM4sAe6FgU';
const tokenFor = (sub, extra) => hs256(secret, { sub, exp: Math.floor(Date.now() / 1000) + 600, topics: ['todo:*'], ...extra });

test('a page publishes to a topic and sends to a user; the server names the sender', async (t) => {
  const pg = await start(['--auth', 'jwt', '--jwt-secret', secret]);
  t.after(() => pg.stop());
  const url = `ws://${pg.http}/ws`;
  const client = (sub, claims) => {
    const c = new PushgateClient({ url, token: tokenFor(sub, claims), topics: ['todo:team-7'], socket: wsSocket });
    t.after(() => c.close());
    return c;
  };
  const alice = client('alice', { pub: ['todo:*'], dm: ['bob'] });
  const bob = client('bob', {});
  const ea = collect(alice);
  const eb = collect(bob);
  alice.connect();
  bob.connect();
  await waitFor('both connected', () => alice.state === 'connected' && bob.state === 'connected');

  const r = await alice.publish('todo:team-7', { title: 'milk' }, { type: 'todo.added', excludeSender: true });
  assert.equal(r.op, 'published');
  assert.match(r.id, /^[0-9A-Z]{26}$/);
  await waitFor("bob's copy", () => eb.messages.length === 1);
  assert.deepEqual(
    { id: eb.messages[0].id, from: eb.messages[0].from, topic: eb.messages[0].topic, type: eb.messages[0].type, data: eb.messages[0].data },
    { id: r.id, from: 'alice', topic: 'todo:team-7', type: 'todo.added', data: { title: 'milk' } });

  const d = await alice.direct('bob', { message: 'hi' });
  await waitFor("bob's direct message", () => eb.messages.length === 2);
  assert.equal(eb.messages[1].id, d.id);
  assert.equal(eb.messages[1].from, 'alice');
  assert.equal(eb.messages[1].topic, '');

  await assert.rejects(bob.publish('todo:team-7', 1), (e) => e.code === 'forbidden');
  await assert.rejects(alice.direct('carol', 1), (e) => e.code === 'forbidden');
  assert.equal(ea.messages.length, 0, 'exclude_sender: alice got her own message');

  // The backend leaves alice's page out by its connection id.
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  assert.ok(alice.connId);
  await backend.publish({ topic: 'todo:team-7', message: { json: '{"from":"backend"}' }, exclude_connection_ids: [alice.connId] });
  await backend.broadcast({ message: { text: 'end' } });
  await waitFor('the marker', () => ea.messages.length === 1 && eb.messages.length === 4);
  assert.equal(ea.messages[0].data, 'end');
  assert.deepEqual(eb.messages.slice(2).map((m) => m.data), [{ from: 'backend' }, 'end']);
  assert.equal(eb.messages[2].from, '');
});
