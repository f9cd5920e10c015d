// Helpers shared by the client tests.
import net from 'node:net';
import crypto from 'node:crypto';
import WS from 'ws';

// wsSocket makes a WebSocket from the ws package (Node 20 has no global one).
export const wsSocket = (url, protocols, headers) => new WS(url, protocols, { headers });

// freePort returns a loopback port that was free a moment ago.
export function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// proxy forwards TCP to target; cut() drops every connection at once, like
// a network change under the client, while new connections keep working.
export async function proxy(target) {
  const [host, port] = target.split(':');
  const socks = new Set();
  let down = false;
  const server = net.createServer((client) => {
    if (down) { client.destroy(); return; }
    const upstream = net.connect(Number(port), host);
    socks.add(client); socks.add(upstream);
    client.pipe(upstream); upstream.pipe(client);
    const done = () => { socks.delete(client); socks.delete(upstream); client.destroy(); upstream.destroy(); };
    client.on('error', done); upstream.on('error', done);
    client.on('close', done); upstream.on('close', done);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    addr: `127.0.0.1:${server.address().port}`,
    cut() { for (const s of socks) s.resetAndDestroy ? s.resetAndDestroy() : s.destroy(); socks.clear(); },
    // down refuses new connections (and cuts the open ones) until up.
    down() { down = true; this.cut(); },
    up() { down = false; },
    close() { this.cut(); server.close(); },
  };
}

// hs256 signs a token for user with secret.
export function hs256(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64(claims);
  const sig = crypto.createHmac('sha256', secret).update(head + '.' + body).digest('base64url');
  return `${head}.${body}.${sig}`;
}

// collect records a client's events.
export function collect(client) {
  const ev = { messages: [], states: [], recovered: [], closes: [], errors: [], reconnecting: [] };
  client.on('message', (m) => ev.messages.push(m));
  client.on('state', (s) => ev.states.push(s));
  client.on('recovered', (r) => ev.recovered.push(r));
  client.on('close', (c) => ev.closes.push(c));
  client.on('error', (e) => ev.errors.push(e));
  client.on('reconnecting', (r) => ev.reconnecting.push(r));
  return ev;
}
