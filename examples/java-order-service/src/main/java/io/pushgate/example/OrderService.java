package io.pushgate.example;

import com.google.protobuf.Duration;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pushgate.v1.Message;
import io.pushgate.v1.PushServiceGrpc;
import io.pushgate.v1.SendToUserRequest;
import io.pushgate.v1.SendToUserResponse;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/**
 * An order service that tells a merchant's open pages about its orders
 * through pushgate: a pop-up when an order is paid, and another when the
 * customer asks where the order is.
 *
 * <p>Usage: {@code OrderService [grpc-addr [api-key [merchant-id]]]}; what is
 * not given comes from PUSHGATE_GRPC_ADDR (default 127.0.0.1:9090),
 * PUSHGATE_API_KEY (default none) and MERCHANT_ID (default merchant-42).
 */
public final class OrderService {

    /** Every call gets this long; a call that takes longer is retried. */
    static final long DEADLINE_MILLIS = 3_000;
    /** Attempts per message, the first included. */
    static final int MAX_ATTEMPTS = 5;
    /** How long a paid order waits in the merchant's inbox when no page is open. */
    static final Duration ORDER_TTL = Duration.newBuilder().setSeconds(10 * 60).build();

    private final PushServiceGrpc.PushServiceBlockingStub pushgate;
    private final String merchantId;

    OrderService(PushServiceGrpc.PushServiceBlockingStub pushgate, String merchantId) {
        this.pushgate = pushgate;
        this.merchantId = merchantId;
    }

    /** An order, as this service knows it. */
    static final class Order {
        final long id; // 64-bit: must reach the browser exactly, never as a float
        final String number; // what the merchant reads

        Order(long id, String number) {
            this.id = id;
            this.number = number;
        }
    }

    /** Called when the payment of an order has gone through. */
    SendToUserResponse orderPaid(Order order) throws InterruptedException {
        String json = "{\"type\":1,\"orderId\":" + order.id + ",\"content\":" + jsonString("订单号: " + order.number) + "}";
        return push("order.paid", json, merchantId + "-order-" + order.id + "-paid");
    }

    /** Called when the customer asks for the n-th time where the order is. */
    SendToUserResponse customerReminder(Order order, int n) throws InterruptedException {
        String json = "{\"type\":2,\"orderId\":" + order.id + ",\"content\":" + jsonString("顾客催单: " + order.number) + "}";
        return push("order.remind", json, merchantId + "-order-" + order.id + "-remind-" + n);
    }

    /**
     * Sends one message to every open page of the merchant. The idempotency
     * key is derived from the event, so the same event sent twice (a retry
     * below, or this service running the event again after a crash) pops
     * up once: pushgate answers repeats with the first call's response.
     */
    private SendToUserResponse push(String type, String json, String idempotencyKey) throws InterruptedException {
        SendToUserRequest req = SendToUserRequest.newBuilder()
                .setUserId(merchantId)
                .setMessage(Message.newBuilder()
                        .setType(type)
                        .setJson(json)
                        .setTtl(ORDER_TTL)
                        .setIdempotencyKey(idempotencyKey))
                .build();
        long backoff = 250; // doubling: 250 ms, 500 ms, 1 s, 2 s, each with jitter
        for (int attempt = 1; ; attempt++) {
            try {
                PushServiceGrpc.PushServiceBlockingStub stub =
                        pushgate.withDeadlineAfter(DEADLINE_MILLIS, TimeUnit.MILLISECONDS);
                if (attempt > 1) {
                    // A retry waits, within its deadline, for the channel to
                    // reconnect instead of failing at once while it is down.
                    stub = stub.withWaitForReady();
                }
                SendToUserResponse resp = stub.sendToUser(req);
                report(type, resp);
                return resp;
            } catch (StatusRuntimeException e) {
                Status.Code code = e.getStatus().getCode();
                if (!retryable(code) || attempt == MAX_ATTEMPTS) {
                    throw e;
                }
                // Jitter (half to all of the backoff), so that many senders do not retry in step.
                long sleep = ThreadLocalRandom.current().nextLong(backoff / 2, backoff + 1);
                System.out.printf("%s: %s (attempt %d of %d), retrying in %d ms with the same idempotency key%n",
                        type, code, attempt, MAX_ATTEMPTS, sleep);
                Thread.sleep(sleep);
                backoff *= 2;
            }
        }
    }

    /**
     * UNAVAILABLE: pushgate is restarting or unreachable. DEADLINE_EXCEEDED:
     * the call may or may not have gone through, and the idempotency key
     * makes it safe to ask again. RESOURCE_EXHAUSTED: over the per-key rate
     * limit. Anything else (INVALID_ARGUMENT, UNAUTHENTICATED, ...) will not
     * get better by retrying.
     */
    static boolean retryable(Status.Code code) {
        return code == Status.Code.UNAVAILABLE
                || code == Status.Code.DEADLINE_EXCEEDED
                || code == Status.Code.RESOURCE_EXHAUSTED;
    }

    private void report(String type, SendToUserResponse resp) {
        System.out.printf("%s -> %s: online=%b delivered_connections=%d stored=%b message_id=%s%n",
                type, merchantId, resp.getOnline(), resp.getDeliveredConnections(), resp.getStored(),
                resp.getMessageId());
        if (!resp.getOnline()) {
            System.out.printf("%s is offline: the message waits %d minutes in the inbox;"
                    + " falling back to SMS as well (not sent by this example)%n",
                    merchantId, ORDER_TTL.getSeconds() / 60);
        }
    }

    /** Adds "authorization: Bearer <key>" to every call on the channel. */
    static final class ApiKeyInterceptor implements ClientInterceptor {
        private static final Metadata.Key<String> AUTHORIZATION =
                Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
        private final String value;

        ApiKeyInterceptor(String apiKey) {
            this.value = "Bearer " + apiKey;
        }

        @Override
        public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
                MethodDescriptor<ReqT, RespT> method, CallOptions options, Channel next) {
            return new ForwardingClientCall.SimpleForwardingClientCall<ReqT, RespT>(next.newCall(method, options)) {
                @Override
                public void start(Listener<RespT> listener, Metadata headers) {
                    headers.put(AUTHORIZATION, value);
                    super.start(listener, headers);
                }
            };
        }
    }

    /** A JSON string literal for s. */
    static String jsonString(String s) {
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        return b.append('"').toString();
    }

    private static String setting(String[] args, int i, String env, String def) {
        if (args.length > i && !args[i].isEmpty()) {
            return args[i];
        }
        String v = System.getenv(env);
        return v == null || v.isEmpty() ? def : v;
    }

    public static void main(String[] args) throws InterruptedException {
        String addr = setting(args, 0, "PUSHGATE_GRPC_ADDR", "127.0.0.1:9090");
        String apiKey = setting(args, 1, "PUSHGATE_API_KEY", "");
        String merchantId = setting(args, 2, "MERCHANT_ID", "merchant-42");

        // One channel for the life of the service: it reconnects by itself.
        // Plaintext is for a pushgate on the same host or private network;
        // with --grpc-tls-cert on the server, use .useTransportSecurity().
        ManagedChannelBuilder<?> builder = ManagedChannelBuilder.forTarget(addr).usePlaintext();
        if (!apiKey.isEmpty()) {
            builder.intercept(new ApiKeyInterceptor(apiKey));
        }
        ManagedChannel channel = builder.build();
        int exit = 0;
        try {
            OrderService service = new OrderService(PushServiceGrpc.newBlockingStub(channel), merchantId);
            Order order = new Order(1786543212345678901L, "20261122001");
            service.orderPaid(order);
            service.customerReminder(order, 1);
        } catch (StatusRuntimeException e) {
            System.err.println("push failed: " + e.getStatus().getCode() + ": " + e.getStatus().getDescription());
            exit = 1;
        } finally {
            channel.shutdown();
            if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
                channel.shutdownNow();
            }
        }
        System.exit(exit);
    }
}
