package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "pushgate/gen/pushgate/v1"
)

// secureServer is a pushgate with client tokens (RS256 by PEM, plus a JWKS),
// API keys and tight limits, and a way to sign tokens for it.
type secureServer struct {
	*testServer
	rsa    *rsa.PrivateKey
	rsaPEM []byte // the public key, as configured
	ec     *ecdsa.PrivateKey
	orders pb.PushServiceClient // authenticated with the "orders" key
	anon   pb.PushServiceClient // no key
}

const ordersKey = "orders-key-0123456789abcdef"

func startSecure(t *testing.T, extra ...string) *secureServer {
	t.Helper()
	dir := t.TempDir()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	os.WriteFile(filepath.Join(dir, "rsa.pem"), pubPEM, 0o600)
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kid": "ec-1", "kty": "EC", "crv": "P-256", "x": b64(ek.X.FillBytes(make([]byte, 32))), "y": b64(ek.Y.FillBytes(make([]byte, 32))),
	}}})
	os.WriteFile(filepath.Join(dir, "jwks.json"), jwks, 0o600)
	args := append([]string{
		"--auth", "jwt",
		"--jwt-public-key", filepath.Join(dir, "rsa.pem"),
		"--jwt-jwks", filepath.Join(dir, "jwks.json"),
		"--jwt-audience", "pushgate", "--jwt-issuer", "shop", "--jwt-leeway", "1s",
		"--api-keys", "orders:" + ordersKey + ",burst:burst-key-0123456789abcdef",
		"--allowed-origins", "admin.example.com",
		"--max-connections-per-user", "3", "--max-connections", "40",
		"--upstream-rate", "50", "--read-limit", "4096", "--max-payload-bytes", "4096",
		"--max-batch-users", "100000", "--read-header-timeout", "1s", "--grpc-rate", "300",
	}, extra...)
	s := &secureServer{testServer: startServer(t, args...), rsa: rk, rsaPEM: pubPEM, ec: ek}
	cc, err := grpc.NewClient(s.app.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+ordersKey), method, req, reply, cc, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	s.orders = pb.NewPushServiceClient(cc)
	s.anon, s.api = s.api, s.orders // the harness's helpers call with the key
	return s
}

// claims returns valid claims for user, changed by kv pairs (nil deletes).
func claims(user string, kv ...any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": user, "aud": "pushgate", "iss": "shop", "exp": time.Now().Add(time.Hour).Unix()}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

func signed(t testing.TB, m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *secureServer) token(t testing.TB, user string, kv ...any) string {
	return signed(t, jwt.SigningMethodRS256, s.rsa, claims(user, kv...), "")
}

// dialStatus tries a WebSocket handshake and returns the HTTP status of a
// refusal (0 if it was accepted; the connection is then returned).
func dialStatus(t testing.TB, url string, h http.Header) (int, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
		return 0, c
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return resp.StatusCode, nil
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// readClose reads until the connection ends and returns its close code.
func readClose(c *websocket.Conn) websocket.StatusCode {
	for {
		if _, _, err := c.Read(context.Background()); err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

// readEnvelope returns the next envelope frame's op and code.
func readEnvelope(t testing.TB, c *websocket.Conn) (op, code string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f struct{ Op, Code string }
	json.Unmarshal(b, &f)
	return f.Op, f.Code
}

func grpcCode(err error, want codes.Code, field string) error {
	st := status.Convert(err)
	if st.Code() != want {
		return fmt.Errorf("got %v, want %v", err, want)
	}
	if field != "" && !strings.HasPrefix(st.Message(), field+":") {
		return fmt.Errorf("message %q does not name %s", st.Message(), field)
	}
	return nil
}

func TestHostileInput(t *testing.T) {
	s := startSecure(t)
	ws := "ws://" + s.app.HTTPAddr() + "/ws"
	ctx := context.Background()

	_, canary := dialStatus(t, ws, bearer(s.token(t, "canary")))
	if canary == nil {
		t.Fatal("canary refused")
	}
	canaryMsgs := readFrames(canary)

	httpStatus := func(want int, url string, h http.Header) func() error {
		return func() error {
			if got, _ := dialStatus(t, url, h); got != want {
				return fmt.Errorf("HTTP %d, want %d", got, want)
			}
			return nil
		}
	}
	closeCode := func(want websocket.StatusCode, user string, typ websocket.MessageType, frames ...[]byte) func() error {
		return func() error {
			_, c := dialStatus(t, ws, bearer(s.token(t, user)))
			if c == nil {
				return errors.New("refused")
			}
			for _, f := range frames {
				if err := c.Write(ctx, typ, f); err != nil {
					break // the server may already have closed
				}
			}
			if got := readClose(c); got != want {
				return fmt.Errorf("close %d, want %d", got, want)
			}
			return nil
		}
	}
	envErr := func(wantCode, user string, frame string, topics ...string) func() error {
		return func() error {
			tok := s.token(t, user, "topics", topics)
			c, _, err := websocket.Dial(ctx, ws, &websocket.DialOptions{HTTPHeader: bearer(tok), Subprotocols: []string{"pushgate.v1"}})
			if err != nil {
				return err
			}
			defer c.CloseNow()
			if op, _ := readEnvelope(t, c); op != "hello" {
				return fmt.Errorf("first frame %s", op)
			}
			c.Write(ctx, websocket.MessageText, []byte(frame))
			if op, code := readEnvelope(t, c); op != "error" || code != wantCode {
				return fmt.Errorf("got %s/%s, want error %s", op, code, wantCode)
			}
			return nil
		}
	}
	withKey := func(key string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", key)
	}
	ok := &pb.Message{Payload: &pb.Message_Json{Json: `{}`}}
	many := make([]string, 100001)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	slowloris := func() error {
		c, err := net.Dial("tcp", s.app.HTTPAddr())
		if err != nil {
			return err
		}
		defer c.Close()
		req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
		start := time.Now()
		for i := 0; i < len(req); i++ {
			if _, err := c.Write([]byte{req[i]}); err != nil {
				break // closed on us: good
			}
			time.Sleep(100 * time.Millisecond)
			if time.Since(start) > 10*time.Second {
				return errors.New("still open after 10s of one byte at a time")
			}
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			return fmt.Errorf("connection not closed: %v", err)
		}
		return nil
	}

	cases := []struct {
		name string
		run  func() error
	}{
		// Handshakes.
		{"no token", httpStatus(401, ws, nil)},
		{"malformed token", httpStatus(401, ws, bearer("abc.def"))},
		{"alg none", httpStatus(401, ws, bearer(func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims("mallory")).SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		}()))},
		{"HS256 signed with the RSA public key (key confusion)", httpStatus(401, ws, bearer(signed(t, jwt.SigningMethodHS256, s.rsaPEM, claims("mallory"), "")))},
		{"bad signature", httpStatus(401, ws, bearer(func() string {
			other, _ := rsa.GenerateKey(rand.Reader, 2048)
			return signed(t, jwt.SigningMethodRS256, other, claims("mallory"), "")
		}()))},
		{"expired", httpStatus(401, ws, bearer(s.token(t, "u", "exp", time.Now().Add(-time.Minute).Unix())))},
		{"not yet valid", httpStatus(401, ws, bearer(s.token(t, "u", "nbf", time.Now().Add(time.Minute).Unix())))},
		{"wrong aud", httpStatus(401, ws, bearer(s.token(t, "u", "aud", "other-service")))},
		{"wrong iss", httpStatus(401, ws, bearer(s.token(t, "u", "iss", "evil")))},
		{"unknown kid", httpStatus(401, ws, bearer(signed(t, jwt.SigningMethodES256, s.ec, claims("u"), "ec-9")))},
		{"token in the query string works (control)", httpStatus(0, ws+"?token="+signed(t, jwt.SigningMethodES256, s.ec, claims("jwks-user"), "ec-1"), nil)},
		{"token for A on /ws/B", func() error {
			if got, _ := dialStatus(t, ws+"/victim", bearer(s.token(t, "mallory"))); got != 403 {
				return fmt.Errorf("HTTP %d, want 403", got)
			}
			if n := s.online(t, "victim"); n != 0 {
				return fmt.Errorf("victim has %d connections", n)
			}
			return nil
		}},
		{"wrong Origin", httpStatus(403, ws, http.Header{"Authorization": {"Bearer " + s.token(t, "u")}, "Origin": {"https://evil.example.net"}})},
		{"allowed Origin (control)", httpStatus(0, ws, http.Header{"Authorization": {"Bearer " + s.token(t, "u2")}, "Origin": {"https://admin.example.com"}})},
		{"missing upgrade headers", func() error {
			resp, err := http.Get("http://" + s.app.HTTPAddr() + "/ws?token=" + s.token(t, "u"))
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUpgradeRequired {
				return fmt.Errorf("HTTP %d, want 426", resp.StatusCode)
			}
			return nil
		}},
		{"headers one byte at a time (slowloris)", slowloris},
		{"connections over the per-user limit", func() error {
			tok := s.token(t, "greedy")
			var conns []*websocket.Conn
			defer func() {
				for _, c := range conns {
					c.CloseNow()
				}
			}()
			for i := range 3 {
				code, c := dialStatus(t, ws, bearer(tok))
				if c == nil {
					return fmt.Errorf("connection %d refused with %d", i+1, code)
				}
				conns = append(conns, c)
			}
			if code, _ := dialStatus(t, ws, bearer(tok)); code != 429 {
				return fmt.Errorf("4th connection: HTTP %d, want 429", code)
			}
			return nil
		}},
		{"connections over the per-node limit", func() error {
			var conns []*websocket.Conn
			base := s.app.Hub().Connections()
			defer func() {
				for _, c := range conns {
					c.CloseNow()
				}
				eventually(t, "flood gone", func() bool { return s.app.Hub().Connections() <= base })
			}()
			for i := 0; i < 60; i++ {
				code, c := dialStatus(t, ws, bearer(s.token(t, fmt.Sprint("flood-", i))))
				if c == nil {
					if code != 503 || s.app.Hub().Connections() != 40 {
						return fmt.Errorf("refused with %d at %d connections, want 503 at 40", code, s.app.Hub().Connections())
					}
					return nil
				}
				conns = append(conns, c)
			}
			return errors.New("never refused")
		}},

		// Client frames.
		{"oversize client frame", closeCode(websocket.StatusMessageTooBig, "big", websocket.MessageText, make([]byte, 5000))},
		{"invalid UTF-8 in a text frame", closeCode(websocket.StatusInvalidFramePayloadData, "utf", websocket.MessageText, []byte{0xc3, 0x28})},
		{"10,000 pings in a second", closeCode(4002, "pinger", websocket.MessageText, func() [][]byte {
			p := make([][]byte, 10000)
			for i := range p {
				p[i] = []byte("ping")
			}
			return p
		}()...)},
		{"binary garbage is ignored", func() error {
			_, c := dialStatus(t, ws, bearer(s.token(t, "garbage")))
			c.Write(ctx, websocket.MessageBinary, []byte{0xff, 0, 0xfe, 1})
			c.Write(ctx, websocket.MessageText, []byte("ping"))
			_, b, err := c.Read(ctx)
			if err != nil || string(b) != `{"type":"pong"}` {
				return fmt.Errorf("after garbage: %q, %v", b, err)
			}
			return nil
		}},
		{"envelope: unknown op", envErr("unknown_op", "env1", `{"op":"sudo"}`)},
		{"envelope: not JSON", envErr("bad_request", "env2", `{"op":`)},
		{"envelope: topic not in the token", envErr("forbidden", "env3", `{"op":"subscribe","topic":"store:2"}`, "store:1")},
		{"envelope: refresh with another user's token", envErr("bad_token", "env4", `{"op":"refresh","token":"`+s.token(t, "someone-else")+`"}`)},

		// gRPC.
		{"gRPC: no key", func() error {
			_, err := s.anon.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: ok})
			return grpcCode(err, codes.Unauthenticated, "")
		}},
		{"gRPC: wrong key", func() error {
			_, err := s.anon.SendToUser(withKey("Bearer nope"), &pb.SendToUserRequest{UserId: "canary", Message: ok})
			return grpcCode(err, codes.Unauthenticated, "")
		}},
		{"gRPC: right length, wrong value", func() error {
			wrong := []byte(ordersKey)
			wrong[len(wrong)-1] ^= 1
			_, err := s.anon.SendToUser(withKey("Bearer "+string(wrong)), &pb.SendToUserRequest{UserId: "canary", Message: ok})
			return grpcCode(err, codes.Unauthenticated, "")
		}},
		{"gRPC: key without the Bearer scheme", func() error {
			_, err := s.anon.SendToUser(withKey(ordersKey), &pb.SendToUserRequest{UserId: "canary", Message: ok})
			return grpcCode(err, codes.Unauthenticated, "")
		}},
		{"gRPC: oversize payload", func() error {
			_, err := s.orders.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: textMsg(strings.Repeat("x", 5000))})
			return grpcCode(err, codes.InvalidArgument, "message.text")
		}},
		{"gRPC: invalid JSON", func() error {
			_, err := s.orders.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: jsonMsg(`{"orderId":}`)})
			return grpcCode(err, codes.InvalidArgument, "message.json")
		}},
		{"gRPC: 100,001 user ids", func() error {
			_, err := s.orders.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: many, Message: ok})
			return grpcCode(err, codes.InvalidArgument, "user_ids")
		}},
		{"gRPC: user id of 10 KB", func() error {
			_, err := s.orders.SendToUser(ctx, &pb.SendToUserRequest{UserId: strings.Repeat("u", 10<<10), Message: ok})
			return grpcCode(err, codes.InvalidArgument, "user_id")
		}},
		{"gRPC: user id with control characters", func() error {
			_, err := s.orders.GetPresence(ctx, &pb.GetPresenceRequest{UserIds: []string{"ok", "bad\x07id"}})
			return grpcCode(err, codes.InvalidArgument, "user_ids[1]")
		}},
		{"gRPC: page_token from another listing", func() error {
			first, err := s.orders.ListOnline(ctx, &pb.ListOnlineRequest{PageSize: 1})
			if err != nil || first.GetNextPageToken() == "" {
				return fmt.Errorf("no token: %v %v", first, err)
			}
			_, err = s.orders.ListOnline(ctx, &pb.ListOnlineRequest{PageSize: 50, PageToken: first.GetNextPageToken()})
			return grpcCode(err, codes.InvalidArgument, "page_token")
		}},
		{"gRPC: ttl over the maximum", func() error {
			_, err := s.orders.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: &pb.Message{
				Payload: ok.Payload, Ttl: durationpb.New(1000 * time.Hour)}})
			return grpcCode(err, codes.InvalidArgument, "message.ttl")
		}},
		{"gRPC: bad topic", func() error {
			_, err := s.orders.Publish(ctx, &pb.PublishRequest{Topic: "store 1\x00", Message: ok})
			return grpcCode(err, codes.InvalidArgument, "topic")
		}},
		{"gRPC: calls over the rate limit", func() error {
			// 16 callers at once, far above --grpc-rate 300 (a loaded
			// machine that made calls one by one might stay under it),
			// until one is refused.
			var limited, calls atomic.Int64
			var failed atomic.Value
			var wg sync.WaitGroup
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for limited.Load() == 0 && calls.Add(1) <= 10000 {
						_, err := s.anon.GetPresence(withKey("Bearer burst-key-0123456789abcdef"), &pb.GetPresenceRequest{UserIds: []string{"x"}})
						if status.Code(err) == codes.ResourceExhausted {
							limited.Add(1)
						} else if err != nil {
							failed.CompareAndSwap(nil, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err, _ := failed.Load().(error); err != nil {
				return err
			}
			if limited.Load() == 0 {
				return errors.New("10,000 calls by 16 callers at once, none refused")
			}
			return nil
		}},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	runHostile(t, cases, s.orders, canaryMsgs)
	t.Logf("%d hostile cases", len(cases))
	if v := s.metric(t, `pushgate_auth_failures_total{reason="bad_alg"}`); v != 2 {
		t.Errorf("bad_alg failures = %v, want 2", v)
	}
	if v := s.metric(t, `pushgate_grpc_auth_failures_total{reason="bad_key"}`); v != 3 {
		t.Errorf("bad_key failures = %v, want 3", v)
	}
	// Secrets never reach the logs.
	logs := s.logs.String()
	for _, secret := range []string{ordersKey, "burst-key-0123456789abcdef", s.token(t, "canary")[:40], "token="} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret (%.12s…)", secret)
		}
	}
}

// readFrames reads c until it ends and hands each frame's text on the
// returned channel, which closes at the end.
func readFrames(c *websocket.Conn) <-chan string {
	out := make(chan string, 100)
	go func() {
		defer close(out)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			out <- string(b)
		}
	}()
	return out
}

// hostileCase is one attack of a hostile-input suite: run returns an error
// when the server did not answer it exactly as it should.
type hostileCase = struct {
	name string
	run  func() error
}

// runHostile runs the cases in order. After each, the canary (a client of
// user "canary", connected before any attack, whose frames arrive on
// canaryMsgs) must receive exactly the message api sends it then: an attack
// must never stop the service for everyone else.
func runHostile(t *testing.T, cases []hostileCase, api pb.PushServiceClient, canaryMsgs <-chan string) {
	t.Helper()
	ctx := context.Background()
	for i, tc := range cases {
		if err := tc.run(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		want := fmt.Sprintf(`{"after":%d}`, i)
		if _, err := api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: jsonMsg(want)}); err != nil {
			t.Fatalf("after %s: canary send: %v", tc.name, err)
		}
		select {
		case got := <-canaryMsgs:
			if got != want {
				t.Fatalf("after %s: canary got %s, want %s", tc.name, got, want)
			}
		case <-time.After(waitFor):
			t.Fatalf("after %s: canary received nothing", tc.name)
		}
	}
}
