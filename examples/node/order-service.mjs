// An order service that tells a merchant's open pages about its orders
// through pushgate: a pop-up when an order is paid, and another when the
// customer asks where the order is.
//
// Usage: node order-service.mjs [grpc-addr [api-key [merchant-id]]]; what is
// not given comes from PUSHGATE_GRPC_ADDR (default 127.0.0.1:9090),
// PUSHGATE_API_KEY (default none) and MERCHANT_ID (default merchant-42).

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const DEADLINE_MS = 3000; // every call gets this long; a call that takes longer is retried
const MAX_ATTEMPTS = 5; // attempts per message, the first included
const ORDER_TTL = { seconds: 10 * 60 }; // how long an order waits for a page to open

// UNAVAILABLE: pushgate is restarting or unreachable. DEADLINE_EXCEEDED: the
// call may or may not have gone through, and the idempotency key makes it
// safe to ask again. RESOURCE_EXHAUSTED: over the per-key rate limit.
// Anything else (INVALID_ARGUMENT, UNAUTHENTICATED, ...) will not get better
// by retrying.
const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.RESOURCE_EXHAUSTED]);

// The proto is read at run time, no generated code. proto-loader brings
// google/protobuf/duration.proto and timestamp.proto itself. keepCase keeps
// the proto's field names (user_id, idempotency_key); longs: String turns
// int64 fields into strings, so no 64-bit value is rounded through a double.
const protoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../proto');
const definition = protoLoader.loadSync('pushgate/v1/push.proto', {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { PushService } = grpc.loadPackageDefinition(definition).pushgate.v1;

// apiKey returns an interceptor that adds "authorization: Bearer <key>" to
// every call.
function apiKey(key) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${key}`);
        next(metadata, listener);
      },
    });
}

class OrderService {
  constructor(pushgate, merchantId) {
    this.pushgate = pushgate;
    this.merchantId = merchantId;
  }

  // Called when the payment of an order has gone through. orderId is a
  // string of digits: a JavaScript number cannot hold 1786543212345678901,
  // so the payload is written as text with the digits in place.
  orderPaid(orderId, orderNo) {
    const json = `{"type":1,"orderId":${orderId},"content":${JSON.stringify(`订单号: ${orderNo}`)}}`;
    return this.push('order.paid', json, `${this.merchantId}-order-${orderId}-paid`);
  }

  // Called when the customer asks for the n-th time where the order is.
  customerReminder(orderId, orderNo, n) {
    const json = `{"type":2,"orderId":${orderId},"content":${JSON.stringify(`顾客催单: ${orderNo}`)}}`;
    return this.push('order.remind', json, `${this.merchantId}-order-${orderId}-remind-${n}`);
  }

  // Sends one message to every open page of the merchant. The idempotency
  // key is derived from the event, so the same event sent twice (a retry
  // below, or this service running the event again after a crash) pops up
  // once: pushgate answers repeats with the first call's response.
  async push(type, json, idempotencyKey) {
    const req = {
      user_id: this.merchantId,
      message: { type, json, ttl: ORDER_TTL, idempotency_key: idempotencyKey },
    };
    let backoff = 250; // doubling: 250 ms, 500 ms, 1 s, 2 s, each with jitter
    for (let attempt = 1; ; attempt++) {
      try {
        const resp = await this.call(req, attempt > 1);
        this.report(type, resp);
        return resp;
      } catch (err) {
        if (!RETRYABLE.has(err.code) || attempt === MAX_ATTEMPTS) throw err;
        // Jitter (half to all of the backoff), so that many senders do not retry in step.
        const wait = Math.round(backoff / 2 + Math.random() * (backoff / 2));
        console.log(`${type}: ${grpc.status[err.code]} (attempt ${attempt} of ${MAX_ATTEMPTS}), retrying in ${wait} ms with the same idempotency key`);
        await sleep(wait);
        backoff *= 2;
      }
    }
  }

  // A retry waits, within its deadline, for the channel to reconnect
  // instead of failing at once while it is down (grpc-js takes
  // waitForReady as a Metadata option).
  call(req, waitForReady) {
    return new Promise((resolve, reject) => {
      const metadata = new grpc.Metadata({ waitForReady });
      this.pushgate.SendToUser(req, metadata, { deadline: Date.now() + DEADLINE_MS }, (err, resp) =>
        err ? reject(err) : resolve(resp));
    });
  }

  report(type, r) {
    console.log(`${type} -> ${this.merchantId}: online=${r.online} delivered_connections=${r.delivered_connections} stored=${r.stored} message_id=${r.message_id}`);
    if (!r.online) {
      console.log(`${this.merchantId} is offline: the message waits ${ORDER_TTL.seconds / 60} minutes in the inbox; falling back to SMS as well (not sent by this example)`);
    }
  }
}

function setting(i, env, def) {
  return process.argv[2 + i] || process.env[env] || def;
}

const addr = setting(0, 'PUSHGATE_GRPC_ADDR', '127.0.0.1:9090');
const key = setting(1, 'PUSHGATE_API_KEY', '');
const merchantId = setting(2, 'MERCHANT_ID', 'merchant-42');

// One client for the life of the service: it reconnects by itself.
// Plaintext is for a pushgate on the same host or private network; with
// --grpc-tls-cert on the server, use grpc.credentials.createSsl().
const client = new PushService(addr, grpc.credentials.createInsecure(), {
  interceptors: key ? [apiKey(key)] : [],
});
try {
  const service = new OrderService(client, merchantId);
  const orderId = '1786543212345678901';
  const orderNo = '20261122001';
  await service.orderPaid(orderId, orderNo);
  await service.customerReminder(orderId, orderNo, 1);
} catch (err) {
  console.error(`push failed: ${grpc.status[err.code] ?? err.code}: ${err.details ?? err.message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
