#!/usr/bin/python3
"""An order service that tells a merchant's open pages about its orders
through pushgate: a pop-up when an order is paid, and another when the
customer asks where the order is.

Usage: order_service.py [grpc-addr [api-key [merchant-id]]]; what is not
given comes from PUSHGATE_GRPC_ADDR (default 127.0.0.1:9090),
PUSHGATE_API_KEY (default none) and MERCHANT_ID (default merchant-42).
"""

import json
import random
import sys
import time

import grpc
from google.protobuf import duration_pb2

from pushgate_client import connect, push_pb2, setting

DEADLINE_SECONDS = 3.0  # every call gets this long; a call that takes longer is retried
MAX_ATTEMPTS = 5  # attempts per message, the first included
ORDER_TTL = duration_pb2.Duration(seconds=10 * 60)  # how long an order waits for a page to open

# UNAVAILABLE: pushgate is restarting or unreachable. DEADLINE_EXCEEDED: the
# call may or may not have gone through, and the idempotency key makes it safe
# to ask again. RESOURCE_EXHAUSTED: over the per-key rate limit. Anything else
# (INVALID_ARGUMENT, UNAUTHENTICATED, ...) will not get better by retrying.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


class OrderService:
    def __init__(self, pushgate, merchant_id):
        self.pushgate = pushgate
        self.merchant_id = merchant_id

    def order_paid(self, order_id, order_no):
        """Called when the payment of an order has gone through."""
        # The payload is written as text: order_id is a 64-bit integer and
        # must reach the browser exactly as written here. ensure_ascii=False
        # keeps the Chinese text as UTF-8 rather than \\u escapes.
        payload = '{"type":1,"orderId":%d,"content":%s}' % (
            order_id, json.dumps("订单号: " + order_no, ensure_ascii=False))
        return self._push("order.paid", payload, "%s-order-%d-paid" % (self.merchant_id, order_id))

    def customer_reminder(self, order_id, order_no, n):
        """Called when the customer asks for the n-th time where the order is."""
        payload = '{"type":2,"orderId":%d,"content":%s}' % (
            order_id, json.dumps("顾客催单: " + order_no, ensure_ascii=False))
        return self._push("order.remind", payload, "%s-order-%d-remind-%d" % (self.merchant_id, order_id, n))

    def _push(self, type_, payload, idempotency_key):
        """Sends one message to every open page of the merchant.

        The idempotency key is derived from the event, so the same event sent
        twice (a retry below, or this service running the event again after a
        crash) pops up once: pushgate answers repeats with the first call's
        response.
        """
        req = push_pb2.SendToUserRequest(
            user_id=self.merchant_id,
            message=push_pb2.Message(type=type_, json=payload, ttl=ORDER_TTL,
                                     idempotency_key=idempotency_key),
        )
        backoff = 0.25  # doubling: 250 ms, 500 ms, 1 s, 2 s, each with jitter
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                # A retry waits, within its deadline, for the channel to
                # reconnect instead of failing at once while it is down.
                resp = self.pushgate.SendToUser(req, timeout=DEADLINE_SECONDS,
                                                wait_for_ready=attempt > 1)
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE or attempt == MAX_ATTEMPTS:
                    raise
                # Jitter (half to all of the backoff), so that many senders do not retry in step.
                sleep = random.uniform(backoff / 2, backoff)
                print("%s: %s (attempt %d of %d), retrying in %d ms with the same idempotency key"
                      % (type_, e.code().name, attempt, MAX_ATTEMPTS, sleep * 1000), flush=True)
                time.sleep(sleep)
                backoff *= 2
                continue
            self._report(type_, resp)
            return resp

    def _report(self, type_, resp):
        print("%s -> %s: online=%s delivered_connections=%d stored=%s message_id=%s" % (
            type_, self.merchant_id, str(resp.online).lower(), resp.delivered_connections,
            str(resp.stored).lower(), resp.message_id), flush=True)
        if not resp.online:
            print("%s is offline: the message waits %d minutes in the inbox;"
                  " falling back to SMS as well (not sent by this example)"
                  % (self.merchant_id, ORDER_TTL.seconds // 60), flush=True)


def main(argv):
    addr = setting(argv, 1, "PUSHGATE_GRPC_ADDR", "127.0.0.1:9090")
    api_key = setting(argv, 2, "PUSHGATE_API_KEY", "")
    merchant_id = setting(argv, 3, "MERCHANT_ID", "merchant-42")
    channel, stub = connect(addr, api_key)
    try:
        service = OrderService(stub, merchant_id)
        order_id, order_no = 1786543212345678901, "20261122001"
        service.order_paid(order_id, order_no)
        service.customer_reminder(order_id, order_no, 1)
    except grpc.RpcError as e:
        print("push failed: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
        return 1
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
