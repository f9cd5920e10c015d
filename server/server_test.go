package server

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// panicky is a Gateway whose SendToUser panics, to prove the recovery
// interceptor turns a handler panic into INTERNAL and keeps serving.
type panicky struct{ Gateway }

func (panicky) SendToUsers(context.Context, []string, gateway.Push) (gateway.Sent, error) {
	panic("boom: secret internal detail")
}

type lockedBuf struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *lockedBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *lockedBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

func serve(t *testing.T, gw Gateway, log *slog.Logger) *grpc.ClientConn {
	t.Helper()
	hs := health.NewServer()
	srv := NewGRPCServer(NewService(gw, log, Options{}), hs, ServerOptions{}, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestPanicBecomesInternalAndIsLoggedWithStack(t *testing.T) {
	logs := &lockedBuf{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	cc := serve(t, panicky{}, log)
	api := pb.NewPushServiceClient(cc)
	msg := &pb.Message{Payload: &pb.Message_Text{Text: "x"}}

	_, err := api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "u", Message: msg})
	if st := status.Convert(err); st.Code() != codes.Internal || strings.Contains(st.Message(), "boom") {
		t.Fatalf("err = %v, want INTERNAL without the panic's text", err)
	}
	if out := logs.String(); !strings.Contains(out, "panic in gRPC handler") || !strings.Contains(out, "boom") || !strings.Contains(out, "server_test.go") {
		t.Fatalf("panic not logged with a stack:\n%s", out)
	}
	// Still serving: health answers, and validation still runs first.
	h, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after panic: %v %v", h, err)
	}
	_, err = api.SendToUser(context.Background(), &pb.SendToUserRequest{Message: msg})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("err = %v, want INVALID_ARGUMENT", err)
	}
}

func TestInvalidArgumentCarriesFieldViolation(t *testing.T) {
	l := Limits{}
	l.setDefaults()
	err := l.validate(&pb.SendToUserRequest{UserId: "u", Message: &pb.Message{Payload: &pb.Message_Json{Json: "{"}}})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code = %v", st.Code())
	}
	var found bool
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && br.GetFieldViolations()[0].GetField() == "message.json" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no BadRequest detail naming message.json: %v", st.Details())
	}
}

func TestPageTokenRoundTrip(t *testing.T) {
	for _, id := range []string{"a", "merchant-42", "用户", strings.Repeat("z", 128)} {
		got, size, err := decodePageToken(encodePageToken(id, 250))
		if err != nil || got != id || size != 250 {
			t.Fatalf("%q: got %q, %d, %v", id, got, size, err)
		}
	}
	for _, bad := range []string{"!!", "AQ", "AXh5eg", encodePageToken("abc", 10) + "A", strings.ToUpper(encodePageToken("abc", 10))} {
		if _, _, err := decodePageToken(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzPageToken(f *testing.F) {
	f.Add(encodePageToken("merchant-42", 100))
	f.Add("")
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, tok string) {
		id, size, err := decodePageToken(tok)
		if err == nil && tok != "" && encodePageToken(id, size) != tok {
			t.Fatalf("%q decodes to %q, which encodes differently", tok, id)
		}
	})
}
