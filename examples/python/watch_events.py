#!/usr/bin/python3
"""Prints users coming online and going offline, as pushgate reports them.

Usage: watch_events.py [grpc-addr [api-key]]; what is not given comes from
PUSHGATE_GRPC_ADDR (default 127.0.0.1:9090) and PUSHGATE_API_KEY (default
none). Runs until interrupted; calls WatchEvents again when the stream ends
(a pushgate restart, or RESOURCE_EXHAUSTED after falling behind).

An offline event comes --presence-grace (5 s by default) after a user's last
connection closed, so a page reload reports nothing.
"""

import sys
import time

import grpc

from pushgate_client import connect, push_pb2, setting

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


def watch(stub, on_ready):
    """Streams events until the stream ends; raises grpc.RpcError then."""
    call = stub.WatchEvents(push_pb2.WatchEventsRequest(kinds=[
        push_pb2.EVENT_KIND_USER_ONLINE, push_pb2.EVENT_KIND_USER_OFFLINE]))
    # pushgate sends the headers once the watch is in place: from here on,
    # nothing is missed. (initial_metadata also returns when the call failed
    # before that; the loop below raises the error then.)
    call.initial_metadata()
    if not call.done():
        on_ready()
        print("watching online/offline events", flush=True)
    for event in call:
        when = event.time.ToDatetime().strftime("%H:%M:%S.%f")[:-3]
        kind = event.WhichOneof("event")
        if kind == "user_online":
            print("%s online %s" % (when, event.user_online.user_id), flush=True)
        elif kind == "user_offline":
            print("%s offline %s" % (when, event.user_offline.user_id), flush=True)


def main(argv):
    addr = setting(argv, 1, "PUSHGATE_GRPC_ADDR", "127.0.0.1:9090")
    api_key = setting(argv, 2, "PUSHGATE_API_KEY", "")
    channel, stub = connect(addr, api_key)
    backoff = [0.2]

    def reset():
        backoff[0] = 0.2

    try:
        while True:
            try:
                watch(stub, reset)
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE:
                    print("watch failed: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
                    return 1
                print("stream ended (%s), watching again in %.1f s" % (e.code().name, backoff[0]), flush=True)
                time.sleep(backoff[0])
                backoff[0] = min(backoff[0] * 2, 5.0)
    except KeyboardInterrupt:
        return 0
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
