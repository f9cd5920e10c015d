// A gRPC client of the real API, for tests that play the backend.
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import path from 'node:path';
import { repoRoot } from './server.mjs';

const def = protoLoader.loadSync('pushgate/v1/push.proto', {
  includeDirs: [path.join(repoRoot, 'proto')], keepCase: true, longs: String, defaults: true, oneofs: true,
});
const pkg = grpc.loadPackageDefinition(def).pushgate.v1;

// api returns promise-returning calls on the PushService at addr.
export function api(addr, key) {
  const client = new pkg.PushService(addr, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  if (key) md.set('authorization', 'Bearer ' + key);
  const call = (method) => (req) => new Promise((resolve, reject) =>
    client[method](req, md, { deadline: Date.now() + 10000 }, (err, res) => (err ? reject(err) : resolve(res))));
  return {
    sendToUser: call('SendToUser'),
    publish: call('Publish'),
    broadcast: call('Broadcast'),
    getPresence: call('GetPresence'),
    getTopicPresence: call('GetTopicPresence'),
    disconnect: call('Disconnect'),
    addPushTarget: call('AddPushTarget'),
    listPushTargets: call('ListPushTargets'),
    watch(req = {}) { return client.WatchEvents(req, md); },
    close() { client.close(); },
  };
}
