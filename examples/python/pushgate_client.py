"""A gRPC channel to pushgate that sends the API key with every call.

Shared by order_service.py and watch_events.py. The stubs come from gen/
(run ./gen.sh first).
"""

import collections
import os
import sys

import grpc

_GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen")
if not os.path.isdir(os.path.join(_GEN, "pushgate", "v1")):
    sys.exit("stubs not found in %s: run ./gen.sh first" % _GEN)
sys.path.insert(0, _GEN)

from pushgate.v1 import push_pb2, push_pb2_grpc  # noqa: E402


def setting(argv, i, env, default):
    """argv[i] when given, else the environment variable env, else default."""
    if len(argv) > i and argv[i]:
        return argv[i]
    return os.environ.get(env) or default


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class ApiKeyInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds "authorization: Bearer <key>" to every call."""

    def __init__(self, api_key):
        self._header = ("authorization", "Bearer " + api_key)

    def _with_key(self, d):
        metadata = list(d.metadata or []) + [self._header]
        return _CallDetails(d.method, d.timeout, metadata, d.credentials,
                            getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_key(details), request)


def connect(addr, api_key):
    """A PushService stub on one channel for the life of the program.

    Plaintext is for a pushgate on the same host or private network; with
    --grpc-tls-cert on the server, use grpc.secure_channel(addr,
    grpc.ssl_channel_credentials()) instead.
    """
    channel = grpc.insecure_channel(addr)
    if api_key:
        channel = grpc.intercept_channel(channel, ApiKeyInterceptor(api_key))
    return channel, push_pb2_grpc.PushServiceStub(channel)
