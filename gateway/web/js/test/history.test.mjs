// Topic history and resume, with the JavaScript client against the real
// binary: the client keeps each topic's position and resumes it by itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PushgateClient } from '../pushgate.mjs';
import { start, waitFor } from './server.mjs';
import { api } from './api.mjs';
import { wsSocket, proxy, collect } from './util.mjs';

const topic = 'todo:team-7';
const onTopic = (ev) => ev.messages.filter((m) => m.topic === topic).map((m) => m.data.n);

test('a topic with history resumes by itself after a cut: everything missed, in order, once', async (t) => {
  const pg = await start(['--topic-history', 'todo:*=100/10m']);
  t.after(() => pg.stop());
  const px = await proxy(pg.http);
  t.after(() => px.close());
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  const publish = (n) => backend.publish({ topic, message: { json: JSON.stringify({ n }) } });

  const c = new PushgateClient({ url: `ws://${px.addr}/ws`, userId: 'page', topics: [topic], minDelay: 50, maxDelay: 200, socket: wsSocket });
  const ev = collect(c);
  c.connect();
  await waitFor('the topic position', () => c.topicPositions[topic] && c.topicPositions[topic].epoch);
  for (let n = 0; n < 3; n++) await publish(n);
  await waitFor('3 live', () => onTopic(ev).length === 3);
  assert.equal(c.topicPositions[topic].lastId, ev.messages[2].id);

  px.down(); // the network goes away, and stays away for a while
  await waitFor('disconnected', () => ev.states.includes('disconnected'));
  for (let n = 3; n < 53; n++) await publish(n); // 50 published meanwhile
  await waitFor('a failed attempt', () => ev.reconnecting.length >= 2);
  px.up();
  await waitFor('all 53', () => onTopic(ev).length >= 53);
  await publish(53);
  await waitFor('the live one', () => onTopic(ev).includes(53));
  c.close();

  assert.deepEqual(onTopic(ev), Array.from({ length: 54 }, (_, n) => n));
  assert.deepEqual(ev.recovered, [{ recovered: true, replayed: 50, topic }]);
});

test('a cut longer than the history says recovered false for the topic', async (t) => {
  const pg = await start(['--topic-history', 'todo:*=5/10m']);
  t.after(() => pg.stop());
  const px = await proxy(pg.http);
  t.after(() => px.close());
  const backend = api(pg.grpc);
  t.after(() => backend.close());
  const publish = (n) => backend.publish({ topic, message: { json: JSON.stringify({ n }) } });

  const c = new PushgateClient({ url: `ws://${px.addr}/ws`, userId: 'page', minDelay: 50, maxDelay: 200, socket: wsSocket });
  const ev = collect(c);
  c.connect();
  const reply = await c.subscribe(topic); // after connect: resubscribed with an op
  assert.ok(reply.epoch, 'a topic with history has an epoch');
  await publish(0);
  await waitFor('live', () => onTopic(ev).length === 1);

  px.down();
  await waitFor('disconnected', () => ev.states.includes('disconnected'));
  for (let n = 1; n < 9; n++) await publish(n); // 8: more than the 5 kept
  px.up();
  await waitFor('recovered event', () => ev.recovered.length === 1);
  assert.deepEqual(ev.recovered[0], { recovered: false, replayed: 5, topic });
  await waitFor('the 5 kept', () => onTopic(ev).length === 6);
  c.close();
  assert.deepEqual(onTopic(ev), [0, 4, 5, 6, 7, 8]);
});
