// A Web Push service (RFC 8030) on loopback, for tests: it checks each
// push's VAPID JWT (RFC 8292) against the application server key the
// subscriptions were made for, and decrypts the aes128gcm body (RFC 8291)
// with the subscription's private key, as a browser's push service and
// user agent would.
import http from 'node:http';
import crypto from 'node:crypto';

const b64u = (b) => Buffer.from(b).toString('base64url');

export async function pushService(vapidPublic) {
  const subs = new Map(); // id → {ecdh, auth}
  const received = [];
  const rejected = [];
  const waiters = [];
  const serverKey = crypto.createPublicKey({ format: 'jwk', key: jwkOf(Buffer.from(vapidPublic, 'base64url')) });
  let origin = '';

  function reject(res, code, why) {
    rejected.push(why);
    res.writeHead(code).end(why);
  }

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const id = req.url.replace(/^\/push\//, '');
      const sub = subs.get(id);
      if (req.method !== 'POST' || !sub) return reject(res, 404, 'no such subscription');
      const why = checkVAPID(req.headers.authorization || '');
      if (why) return reject(res, 401, 'vapid: ' + why);
      if (req.headers['content-encoding'] !== 'aes128gcm') return reject(res, 415, 'content-encoding');
      if (!/^\d+$/.test(req.headers.ttl || '')) return reject(res, 400, 'TTL');
      let payload;
      try {
        payload = decrypt(sub, Buffer.concat(chunks));
      } catch (e) {
        return reject(res, 400, 'body: ' + e.message);
      }
      const msg = { sub: id, payload, ttl: Number(req.headers.ttl), urgency: req.headers.urgency || '', topic: req.headers.topic || '' };
      received.push(msg);
      waiters.splice(0).forEach((w) => w());
      res.writeHead(201, { Location: `${origin}/message/${received.length}` }).end();
    });
  });

  function checkVAPID(h) {
    const m = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(h);
    if (!m) return 'no "vapid t=…, k=…" Authorization';
    if (m[2] !== vapidPublic) return 'k is not the key the subscription was made for';
    const [head, body, sig] = m[1].split('.');
    const ok = crypto.verify('sha256', Buffer.from(head + '.' + body), { key: serverKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url'));
    if (!ok) return 'bad signature';
    const hdr = JSON.parse(Buffer.from(head, 'base64url'));
    const claims = JSON.parse(Buffer.from(body, 'base64url'));
    if (hdr.alg !== 'ES256') return 'alg ' + hdr.alg;
    if (claims.aud !== origin) return `aud ${claims.aud}, want ${origin}`;
    const now = Date.now() / 1000;
    if (!(claims.exp > now && claims.exp <= now + 86400)) return 'exp ' + claims.exp;
    if (!/^(mailto:|https:)/.test(claims.sub || '')) return 'sub ' + claims.sub;
    return '';
  }

  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin, received, rejected,
    // subscribe makes a subscription as a browser would: PushSubscription.toJSON().
    subscribe() {
      const id = crypto.randomBytes(8).toString('hex');
      const ecdh = crypto.createECDH('prime256v1');
      ecdh.generateKeys();
      const auth = crypto.randomBytes(16);
      subs.set(id, { ecdh, auth });
      return { id, json: { endpoint: `${origin}/push/${id}`, keys: { p256dh: b64u(ecdh.getPublicKey()), auth: b64u(auth) } } };
    },
    async next(ms = 15000) {
      const deadline = Date.now() + ms;
      const n = received.length;
      while (received.length === n) {
        if (Date.now() > deadline) throw new Error('no push; rejected: ' + rejected.join('; '));
        await new Promise((r) => { waiters.push(r); setTimeout(r, 100); });
      }
      return received[n];
    },
    close() { return new Promise((r) => server.close(r)); },
  };
}

function jwkOf(point) {
  return { kty: 'EC', crv: 'P-256', x: b64u(point.subarray(1, 33)), y: b64u(point.subarray(33, 65)) };
}

const hkdf = (ikm, salt, info, len) => Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from(info, 'binary'), len));

// decrypt reads one aes128gcm record (RFC 8188) with the keys of RFC 8291.
function decrypt(sub, body) {
  const salt = body.subarray(0, 16);
  const idlen = body[20];
  const asPub = body.subarray(21, 21 + idlen);
  const uaPub = sub.ecdh.getPublicKey();
  const shared = sub.ecdh.computeSecret(asPub);
  const ikm = hkdf(shared, sub.auth, 'WebPush: info\0' + uaPub.toString('binary') + asPub.toString('binary'), 32);
  const key = hkdf(ikm, salt, 'Content-Encoding: aes128gcm\0', 16);
  const nonce = hkdf(ikm, salt, 'Content-Encoding: nonce\0', 12);
  const rec = body.subarray(21 + idlen);
  const d = crypto.createDecipheriv('aes-128-gcm', key, nonce);
  d.setAuthTag(rec.subarray(rec.length - 16));
  const plain = Buffer.concat([d.update(rec.subarray(0, rec.length - 16)), d.final()]);
  let end = plain.length - 1;
  while (end >= 0 && plain[end] === 0) end--;
  if (plain[end] !== 2) throw new Error('no last-record delimiter');
  return plain.subarray(0, end);
}
