// Topic presence through the JavaScript client, against the real binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PushgateClient } from '../pushgate.mjs';
import { start, waitFor } from './server.mjs';
import { api } from './api.mjs';
import { wsSocket, hs256 } from './util.mjs';

const secret = 'Vb2NcR5tYh8ZpM4sAe6FgUk3Jd9QwLx7';
const tokenFor = (sub, extra) => hs256(secret, { sub, exp: Math.floor(Date.now() / 1000) + 600, topics: ['todo:*'], ...extra });

test('presence() lists who is subscribed, a page at a time, when the token allows it', async (t) => {
  const pg = await start(['--auth', 'jwt', '--jwt-secret', secret, '--presence-grace', '0']);
  t.after(() => pg.stop());
  const url = `ws://${pg.http}/ws`;
  const client = (sub, claims) => {
    const c = new PushgateClient({ url, token: tokenFor(sub, claims), topics: ['todo:team-7'], socket: wsSocket });
    t.after(() => c.close());
    return c.connect();
  };
  const alice = client('alice', { presence: ['todo:*'] });
  const aliceTab = client('alice', { presence: ['todo:*'] });
  const bob = client('bob', {});
  await waitFor('all connected', () => [alice, aliceTab, bob].every((c) => c.state === 'connected'));

  // Subscriptions reach the engine around the hello: wait until the
  // backend's view has all three.
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  let seen;
  await waitFor('three subscribers', async () => {
    seen = await backend.getTopicPresence({ topic: 'todo:team-7' });
    return seen.total_connections === '3';
  });

  const p = await alice.presence('todo:team-7');
  assert.equal(p.op, 'presence');
  assert.equal(p.topic, 'todo:team-7');
  assert.deepEqual(p.users, [{ user_id: 'alice', connections: 2 }, { user_id: 'bob', connections: 1 }]);
  assert.equal(p.total_users, 2);
  assert.equal(p.total_connections, 3);
  assert.equal(p.next, undefined);

  const first = await alice.presence('todo:team-7', { limit: 1 });
  assert.deepEqual(first.users, [{ user_id: 'alice', connections: 2 }]);
  assert.equal(first.next, 'alice');
  const second = await alice.presence('todo:team-7', { limit: 1, after: first.next });
  assert.deepEqual(second.users, [{ user_id: 'bob', connections: 1 }]);
  assert.equal(second.next, undefined);

  // bob's token has no presence claim.
  await assert.rejects(bob.presence('todo:team-7'), (e) => e.code === 'forbidden');

  // A page that closes leaves the list (polled through the backend:
  // presence requests count against the client's publish rate).
  aliceTab.close();
  await waitFor('alice down to one connection', async () =>
    (await backend.getTopicPresence({ topic: 'todo:team-7' })).total_connections === '2');
  const after = await alice.presence('todo:team-7');
  assert.deepEqual(after.users, [{ user_id: 'alice', connections: 1 }, { user_id: 'bob', connections: 1 }]);
});

test('join and leave callbacks on a topic the server reports joins and leaves of', async (t) => {
  const pg = await start(['--auth', 'jwt', '--jwt-secret', secret, '--presence-grace', '0', '--topic-presence-events', 'todo:*']);
  t.after(() => pg.stop());
  const url = `ws://${pg.http}/ws`;
  const client = (sub) => {
    const c = new PushgateClient({ url, token: tokenFor(sub, {}), topics: ['todo:team-7'], socket: wsSocket });
    t.after(() => c.close());
    return c;
  };
  const alice = client('alice');
  const seen = [];
  alice.on('join', (e) => seen.push('join ' + e.userId + ' ' + e.topic));
  alice.on('leave', (e) => seen.push('leave ' + e.userId + ' ' + e.topic));
  alice.connect();
  await waitFor("alice's own join", () => seen.length === 1);
  const bob = client('bob').connect();
  await waitFor("bob's join", () => seen.length === 2);
  const bobTab = client('bob').connect(); // a second tab: no join
  await waitFor('bob\'s second tab connected', () => bobTab.state === 'connected');
  bob.close();
  bobTab.close();
  await waitFor("bob's leave", () => seen.length === 3);
  assert.deepEqual(seen, ['join alice todo:team-7', 'join bob todo:team-7', 'leave bob todo:team-7']);
});
