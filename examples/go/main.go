// Command go is the order service of the other examples in Go: it tells a
// merchant's open pages about an order through pushgate, a pop-up when the
// order is paid and another when the customer asks where it is.
//
// Usage: go run ./examples/go [grpc-addr [api-key [merchant-id]]]; what is
// not given comes from PUSHGATE_GRPC_ADDR (default 127.0.0.1:9090),
// PUSHGATE_API_KEY (default none) and MERCHANT_ID (default merchant-42).
//
// From another module, generate pushgate/v1 from proto/ (buf generate, or
// protoc --go_out --go-grpc_out) and import that instead.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "pushgate/gen/pushgate/v1"
)

const (
	deadline    = 3 * time.Second  // every call gets this long; a call that takes longer is retried
	maxAttempts = 5                // attempts per message, the first included
	orderTTL    = 10 * time.Minute // how long an order waits for a page to open
)

// retryable: UNAVAILABLE (pushgate is restarting or unreachable),
// DEADLINE_EXCEEDED (the call may or may not have gone through; the
// idempotency key makes it safe to ask again), RESOURCE_EXHAUSTED (over the
// per-key rate limit). Anything else will not get better by retrying.
func retryable(c codes.Code) bool {
	return c == codes.Unavailable || c == codes.DeadlineExceeded || c == codes.ResourceExhausted
}

// apiKey sends "authorization: Bearer <key>" with every call.
type apiKey string

func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

// RequireTransportSecurity is false for a pushgate on the same host or
// private network; with --grpc-tls-cert on the server, use
// credentials.NewClientTLSFromFile and return true.
func (apiKey) RequireTransportSecurity() bool { return false }

type orderService struct {
	api      pb.PushServiceClient
	merchant string
}

// orderPaid is called when the payment of an order has gone through. The
// 64-bit order id is written into the JSON text as digits: the json field
// is passed on byte for byte, so the number is never rounded.
func (s *orderService) orderPaid(orderID uint64, orderNo string) error {
	payload := fmt.Sprintf(`{"type":1,"orderId":%d,"content":%s}`, orderID, jsonString("订单号: "+orderNo))
	return s.push("order.paid", payload, fmt.Sprintf("%s-order-%d-paid", s.merchant, orderID))
}

// customerReminder is called when the customer asks for the n-th time where
// the order is.
func (s *orderService) customerReminder(orderID uint64, orderNo string, n int) error {
	payload := fmt.Sprintf(`{"type":2,"orderId":%d,"content":%s}`, orderID, jsonString("顾客催单: "+orderNo))
	return s.push("order.remind", payload, fmt.Sprintf("%s-order-%d-remind-%d", s.merchant, orderID, n))
}

// push sends one message to every open page of the merchant. The
// idempotency key is derived from the event, so the same event sent twice
// (a retry below, or this service running the event again after a crash)
// pops up once: pushgate answers repeats with the first call's response.
func (s *orderService) push(typ, payload, key string) error {
	req := &pb.SendToUserRequest{
		UserId: s.merchant,
		Message: &pb.Message{
			Type:           typ,
			Payload:        &pb.Message_Json{Json: payload},
			Ttl:            durationpb.New(orderTTL),
			IdempotencyKey: key,
		},
	}
	backoff := 250 * time.Millisecond // doubling, each wait with jitter
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		// A retry waits, within its deadline, for the channel to reconnect
		// instead of failing at once while pushgate is down.
		resp, err := s.api.SendToUser(ctx, req, grpc.WaitForReady(attempt > 1))
		cancel()
		if err == nil {
			s.report(typ, resp)
			return nil
		}
		code := status.Code(err)
		if !retryable(code) || attempt == maxAttempts {
			return err
		}
		// Jitter (half to all of the backoff), so that many senders do not
		// retry in step.
		wait := backoff/2 + rand.N(backoff/2)
		fmt.Printf("%s: %s (attempt %d of %d), retrying in %d ms with the same idempotency key\n",
			typ, codeName(code), attempt, maxAttempts, wait.Milliseconds())
		time.Sleep(wait)
		backoff *= 2
	}
}

func (s *orderService) report(typ string, r *pb.SendToUserResponse) {
	fmt.Printf("%s -> %s: online=%t delivered_connections=%d stored=%t message_id=%s\n",
		typ, s.merchant, r.GetOnline(), r.GetDeliveredConnections(), r.GetStored(), r.GetMessageId())
	if !r.GetOnline() {
		fmt.Printf("%s is offline: the message waits %d minutes in the inbox; falling back to SMS as well (not sent by this example)\n",
			s.merchant, int(orderTTL.Minutes()))
	}
}

// codeName is the status code as the proto spells it (UNAVAILABLE).
func codeName(c codes.Code) string {
	names := map[codes.Code]string{codes.Unavailable: "UNAVAILABLE", codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED"}
	if n, ok := names[c]; ok {
		return n
	}
	return c.String()
}

func jsonString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

func setting(i int, env, def string) string {
	if len(os.Args) > i+1 && os.Args[i+1] != "" {
		return os.Args[i+1]
	}
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

func main() {
	addr := setting(0, "PUSHGATE_GRPC_ADDR", "127.0.0.1:9090")
	key := setting(1, "PUSHGATE_API_KEY", "")
	merchant := setting(2, "MERCHANT_ID", "merchant-42")

	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(apiKey(key)))
	}
	// One client for the life of the service: it reconnects by itself.
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushgate client:", err)
		os.Exit(1)
	}
	defer cc.Close()
	s := &orderService{api: pb.NewPushServiceClient(cc), merchant: merchant}
	const orderID, orderNo = 1786543212345678901, "20261122001"
	err = s.orderPaid(orderID, orderNo)
	if err == nil {
		err = s.customerReminder(orderID, orderNo, 1)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "push failed: %s: %s\n", codeName(status.Code(err)), status.Convert(err).Message())
		cc.Close()
		os.Exit(1)
	}
}
