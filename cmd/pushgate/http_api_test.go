package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "pushgate/gen/pushgate/v1"
	"pushgate/server"
)

const httpAPIKey = "httpapi-key-0123456789"

// jsonAPI calls the HTTP/JSON API as curl would: a POST with a JSON body,
// over a real socket.
type jsonAPI struct {
	t    testing.TB
	base string // http://host:port/pushgate.v1.PushService/
	key  string // "": no Authorization header
}

func (s *testServer) jsonAPI(t testing.TB, key string) jsonAPI {
	return jsonAPI{t: t, base: "http://" + s.app.HTTPAddr() + "/pushgate.v1.PushService/", key: key}
}

// apiAnswer is one HTTP answer: its status and its JSON body.
type apiAnswer struct {
	status int
	body   map[string]any
	raw    string
	header http.Header
}

// code is the error body's code ("" for a success).
func (a apiAnswer) code() string { s, _ := a.body["code"].(string); return s }

func (a apiAnswer) message() string { s, _ := a.body["message"].(string); return s }

func (j jsonAPI) post(method, contentType, body string) apiAnswer {
	j.t.Helper()
	req, err := http.NewRequest(http.MethodPost, j.base+method, strings.NewReader(body))
	if err != nil {
		j.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if j.key != "" {
		req.Header.Set("Authorization", "Bearer "+j.key)
	}
	return j.do(req)
}

func (j jsonAPI) do(req *http.Request) apiAnswer {
	j.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		j.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		j.t.Fatalf("%s: reading the answer: %v", req.URL.Path, err)
	}
	a := apiAnswer{status: resp.StatusCode, raw: string(raw), header: resp.Header}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		j.t.Fatalf("%s: answer %d is not JSON: %v\n%s", req.URL.Path, resp.StatusCode, err, raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		j.t.Errorf("%s: Content-Type %q, want application/json", req.URL.Path, ct)
	}
	return a
}

// call posts a JSON body and fails unless the answer has the status want.
func (j jsonAPI) call(method, body string, want int) apiAnswer {
	j.t.Helper()
	a := j.post(method, "application/json", body)
	if a.status != want {
		j.t.Fatalf("%s %s: status %d, want %d: %s", method, body, a.status, want, a.raw)
	}
	return a
}

// TestHTTPAPIEachRPC calls every unary PushService method as a JSON POST,
// without an API key (401, the gRPC API's message), with a wrong one, and
// with the right one, whose answers carry what the call did: the merchant's
// WebSocket client receives what was sent, presence reports it, Disconnect
// closes it. GetMessageStatus answers over HTTP what it answers over gRPC.
func TestHTTPAPIEachRPC(t *testing.T) {
	s := startServer(t, "--api-keys", "orders:"+httpAPIKey, "--presence-grace", "0")
	anon, wrong, api := s.jsonAPI(t, ""), s.jsonAPI(t, "not-the-key-0123456789"), s.jsonAPI(t, httpAPIKey)

	c := s.dial(t, "merchant-42")
	eventually(t, "merchant-42 online", func() bool {
		return strings.Contains(api.call("GetPresence", `{"userIds":["merchant-42"]}`, http.StatusOK).raw, `"connections":1`)
	})

	calls := []struct{ method, body string }{
		{"SendToUser", `{"userId":"merchant-42","message":{"text":"to one"}}`},
		{"SendToUsers", `{"user_ids":["merchant-42","nobody"],"message":{"json":"{\"n\":2}"}}`},
		{"Broadcast", `{"message":{"text":"to all"}}`},
		{"Publish", `{"topic":"orders","message":{"text":"to a topic"}}`},
		{"ListOnline", `{}`},
		{"GetPresence", `{"userIds":["merchant-42"]}`},
		{"GetMessageStatus", `{"messageId":"01M8XWD3A5EYF8Z80MWS32K19K"}`},
		{"Disconnect", `{"userId":"merchant-42","reason":"bye"}`},
	}
	for _, call := range calls {
		t.Run(call.method+"/no key", func(t *testing.T) {
			a := anon.call(call.method, call.body, http.StatusUnauthorized)
			if a.code() != "unauthenticated" || !strings.Contains(a.message(), "missing API key") {
				t.Errorf("answer %s, want code unauthenticated, missing API key", a.raw)
			}
			a = wrong.call(call.method, call.body, http.StatusUnauthorized)
			if a.code() != "unauthenticated" || a.message() != "invalid API key" {
				t.Errorf("wrong key: answer %s, want code unauthenticated, invalid API key", a.raw)
			}
		})
	}
	// Nothing reached the merchant without a key.
	select {
	case m := <-c.msgs:
		t.Fatalf("the merchant got %q from calls without a key", m.data)
	default:
	}

	a := api.call("SendToUser", calls[0].body, http.StatusOK)
	if a.body["online"] != true || a.body["deliveredConnections"] != 1.0 || a.body["messageId"] == "" {
		t.Errorf("SendToUser: %s", a.raw)
	}
	c.expect("to one")
	sentID := a.body["messageId"].(string)

	a = api.call("SendToUsers", calls[1].body, http.StatusOK)
	if !strings.Contains(a.raw, `{"userId":"merchant-42","online":true,"deliveredConnections":1,"stored":false,"messageId":""}`) ||
		!strings.Contains(a.raw, `{"userId":"nobody","online":false,"deliveredConnections":0,"stored":false,"messageId":""}`) {
		t.Errorf("SendToUsers: %s", a.raw)
	}
	c.expect(`{"n":2}`)

	a = api.call("Broadcast", calls[2].body, http.StatusOK)
	if a.body["deliveredConnections"] != "1" { // an int64: a JSON string
		t.Errorf("Broadcast: %s", a.raw)
	}
	c.expect("to all")

	a = api.call("Publish", calls[3].body, http.StatusOK)
	if a.body["deliveredConnections"] != "0" || a.body["messageId"] == "" {
		t.Errorf("Publish (no subscriber): %s", a.raw)
	}

	a = api.call("ListOnline", calls[4].body, http.StatusOK)
	if !strings.Contains(a.raw, `"userId":"merchant-42","connections":1`) || a.body["totalUsers"] != "1" {
		t.Errorf("ListOnline: %s", a.raw)
	}
	a = api.call("GetPresence", calls[5].body, http.StatusOK)
	if !strings.Contains(a.raw, `"userId":"merchant-42","connections":1`) {
		t.Errorf("GetPresence: %s", a.raw)
	}

	// GetMessageStatus: the same receipt over both APIs.
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+httpAPIKey)
	want, err := s.api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: sentID})
	if err != nil {
		t.Fatalf("GetMessageStatus over gRPC: %v", err)
	}
	a = api.call("GetMessageStatus", `{"messageId":"`+sentID+`"}`, http.StatusOK)
	got := &pb.GetMessageStatusResponse{}
	if err := protojson.Unmarshal([]byte(a.raw), got); err != nil {
		t.Fatalf("GetMessageStatus over HTTP: %v: %s", err, a.raw)
	}
	if !proto.Equal(got, want) || len(got.GetRecipients()) != 1 || got.GetRecipients()[0].GetUserId() != "merchant-42" {
		t.Errorf("GetMessageStatus over HTTP: %s\nover gRPC: %v", a.raw, want)
	}

	a = api.call("Disconnect", calls[7].body, http.StatusOK)
	if a.body["closedConnections"] != 1.0 {
		t.Errorf("Disconnect: %s", a.raw)
	}
	if code := c.closeCode(); code == -1 {
		t.Errorf("the merchant's connection ended without a close frame")
	}
	// The calls went through the gRPC server's interceptors: counted by
	// caller and method.
	if n := s.metric(t, `pushgate_grpc_calls_total{caller="orders",code="OK",method="SendToUser"}`); n != 1 {
		t.Errorf("SendToUser calls counted for caller orders: %v, want 1", n)
	}
	if n := s.metric(t, `pushgate_grpc_auth_failures_total{reason="missing_key"}`); n != float64(len(calls)) {
		t.Errorf("missing-key failures counted: %v, want %d", n, len(calls))
	}
}

// TestHTTPAPIBadRequests: what the gRPC API refuses, the HTTP API refuses
// with 400 and the field named; and what only JSON can get wrong (syntax,
// unknown fields, wrong types) is refused the same way.
func TestHTTPAPIBadRequests(t *testing.T) {
	s := startServer(t, "--api-keys", "orders:"+httpAPIKey, "--grpc-rate", "1000", "--max-payload-bytes", "1000")
	api := s.jsonAPI(t, httpAPIKey)
	for _, tc := range []struct {
		name, method, body string
		status             int
		code, want         string // want: in the message
	}{
		{"bad JSON", "SendToUser", `{"userId":"a",`, 400, "invalid_argument", "request body: "},
		{"not an object", "SendToUser", `["a"]`, 400, "invalid_argument", "request body: "},
		{"unknown field", "SendToUser", `{"userId":"a","usrId":"b","message":{"text":"x"}}`, 400, "invalid_argument", "request body: usrId: unknown field"},
		{"unknown nested field", "SendToUser", `{"userId":"a","message":{"txt":"x"}}`, 400, "invalid_argument", "request body: message.txt: unknown field"},
		{"wrong type", "SendToUser", `{"userId":5,"message":{"text":"x"}}`, 400, "invalid_argument", "request body: user_id: invalid value for string field userId: 5"},
		{"proto field names", "SendToUser", `{"user_id":"a","message":{"text":5}}`, 400, "invalid_argument", "request body: message.text: "},
		{"a string for a list", "GetPresence", `{"userIds":"merchant-42"}`, 400, "invalid_argument", "request body: user_ids: "},
		{"wrong type in a list", "SendToUsers", `{"userIds":["a",7],"message":{"text":"x"}}`, 400, "invalid_argument", "request body: user_ids: "},
		{"a string for a number", "ListOnline", `{"pageSize":"ten"}`, 400, "invalid_argument", "request body: page_size: "},
		{"bad duration", "SendToUser", `{"userId":"a","message":{"text":"x","ttl":"ten minutes"}}`, 400, "invalid_argument", "request body: message.ttl: "},
		{"two payloads", "SendToUser", `{"userId":"a","message":{"text":"x","json":"{}"}}`, 400, "invalid_argument", `request body: message: error parsing "json", oneof`},
		{"validation: empty user id", "SendToUser", `{"userId":"","message":{"text":"x"}}`, 400, "invalid_argument", "user_id: "},
		{"validation: payload too large", "SendToUser", `{"userId":"a","message":{"text":"` + strings.Repeat("x", 1001) + `"}}`, 400, "invalid_argument", "message.text: "},
		{"validation: ttl over the maximum", "SendToUser", `{"userId":"a","message":{"text":"x","ttl":"100000s"}}`, 400, "invalid_argument", "message.ttl: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := api.call(tc.method, tc.body, tc.status)
			if a.code() != tc.code || !strings.Contains(a.message(), tc.want) {
				t.Errorf("answer %s, want code %s and %q in the message", a.raw, tc.code, tc.want)
			}
		})
	}

	// The gRPC API's validation error carries a BadRequest detail naming
	// the field; so does the HTTP answer.
	a := api.call("SendToUser", `{"userId":"","message":{"text":"x"}}`, 400)
	if !strings.Contains(a.raw, `"type":"google.rpc.BadRequest"`) || !strings.Contains(a.raw, `"fieldViolations":[{"field":"user_id"`) {
		t.Errorf("validation error without its BadRequest detail: %s", a.raw)
	}

	t.Run("body over the gRPC message size", func(t *testing.T) {
		big := `{"userId":"a","message":{"text":"` + strings.Repeat("x", server.DefaultMaxRequestBytes) + `"}}`
		a := api.post("SendToUser", "application/json", big)
		if a.status != http.StatusRequestEntityTooLarge || a.code() != "resource_exhausted" || !strings.Contains(a.message(), fmt.Sprint(server.DefaultMaxRequestBytes)) {
			t.Errorf("answer %d %s, want 413 resource_exhausted naming the limit", a.status, a.raw)
		}
		// Without a Content-Length the body is cut at the limit as it is read.
		req, _ := http.NewRequest(http.MethodPost, api.base+"SendToUser", io.MultiReader(strings.NewReader(big)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+httpAPIKey)
		req.ContentLength = -1
		if a := api.do(req); a.status != http.StatusRequestEntityTooLarge {
			t.Errorf("chunked: answer %d %s, want 413", a.status, a.raw)
		}
		if n := s.metric(t, `pushgate_http_api_refused_total{reason="too_large"}`); n != 2 {
			t.Errorf("refusals counted: %v, want 2", n)
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "application/grpc-web+json", "application/connect+json"} {
			a := api.post("SendToUser", ct, `{"userId":"a","message":{"text":"x"}}`)
			if a.status != http.StatusUnsupportedMediaType || !strings.Contains(a.message(), "application/json") {
				t.Errorf("Content-Type %q: answer %d %s, want 415 asking for application/json", ct, a.status, a.raw)
			}
		}
	})
	t.Run("GET", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, api.base+"ListOnline", nil)
		req.Header.Set("Authorization", "Bearer "+httpAPIKey)
		if a := api.do(req); a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "POST" {
			t.Errorf("answer %d %s, want 405 with Allow: POST", a.status, a.raw)
		}
	})
	t.Run("unknown method", func(t *testing.T) {
		a := api.post("SendToEveryone", "application/json", `{}`)
		if a.status != http.StatusNotFound || a.code() != "unimplemented" || !strings.Contains(a.message(), "SendToEveryone") {
			t.Errorf("answer %d %s, want 404 unimplemented naming the method", a.status, a.raw)
		}
	})
}

// TestHTTPAPIRateLimit: --grpc-rate applies to HTTP callers, per key, with
// the status of RESOURCE_EXHAUSTED.
func TestHTTPAPIRateLimit(t *testing.T) {
	s := startServer(t, "--api-keys", "orders:"+httpAPIKey, "--grpc-rate", "1")
	api := s.jsonAPI(t, httpAPIKey)
	limited := 0
	for range 5 {
		a := api.post("ListOnline", "application/json", `{}`)
		switch {
		case a.status == http.StatusTooManyRequests && a.code() == "resource_exhausted":
			limited++
		case a.status != http.StatusOK:
			t.Fatalf("answer %d %s", a.status, a.raw)
		}
	}
	if limited == 0 {
		t.Errorf("5 calls at once within --grpc-rate 1")
	}
}

// TestHTTPAPISlowBody: a request whose body does not arrive within
// --grpc-request-timeout is answered 408 and its connection closed.
func TestHTTPAPISlowBody(t *testing.T) {
	s := startServer(t, "--api-keys", "orders:"+httpAPIKey, "--grpc-request-timeout", "500ms")
	conn, err := net.Dial("tcp", s.app.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /pushgate.v1.PushService/ListOnline HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", s.app.HTTPAddr(), httpAPIKey)
	conn.SetReadDeadline(time.Now().Add(waitFor))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "did not arrive within 500ms") {
		t.Errorf("answer %d %s, want 408 naming the 500ms of --grpc-request-timeout", resp.StatusCode, body)
	}
	if n := s.metric(t, `pushgate_http_api_refused_total{reason="timeout"}`); n != 1 {
		t.Errorf("refusals counted: %v, want 1", n)
	}
}

// TestHTTPAPILoopbackHost: with no API keys the API is open on loopback
// only, and refuses requests naming another Host (DNS rebinding), even
// next to --auth jwt (which guards /ws, not the API).
func TestHTTPAPILoopbackHost(t *testing.T) {
	s := startServer(t, "--auth", "jwt", "--jwt-secret", "http-api-test-secret-0123456789abcdef")
	api := s.jsonAPI(t, "")
	api.call("ListOnline", `{}`, http.StatusOK)
	req, _ := http.NewRequest(http.MethodPost, api.base+"ListOnline", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	req.Host = "pushgate.example.com"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("Host pushgate.example.com: status %d, want 403", resp.StatusCode)
	}
}

// TestHTTPAPIOnTheNetwork: on an HTTP listener reachable from the network,
// the API is served without keys only with --insecure; else it is off and
// the log says why.
func TestHTTPAPIOnTheNetwork(t *testing.T) {
	jwt := []string{"--http-addr", "0.0.0.0:0", "--auth", "jwt", "--jwt-secret", "http-api-test-secret-0123456789abcdef"}
	for _, tc := range []struct {
		name   string
		args   []string
		status int
	}{
		{"no keys", jwt, http.StatusNotFound},
		{"no keys, --insecure", append([]string{"--insecure"}, jwt...), http.StatusOK},
		{"keys", append([]string{"--api-keys", "orders:" + httpAPIKey}, jwt...), http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.args...)
			_, port, _ := net.SplitHostPort(s.app.HTTPAddr())
			req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+port+"/pushgate.v1.PushService/ListOnline", strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+httpAPIKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if off := strings.Contains(s.logs.String(), "HTTP/JSON API off"); off != (tc.status == http.StatusNotFound) {
				t.Errorf("log says the API is off: %v; logs:\n%s", off, s.logs)
			}
		})
	}
}

// TestHTTPAPIOff: --no-http-api serves none of it.
func TestHTTPAPIOff(t *testing.T) {
	s := startServer(t, "--api-keys", "orders:"+httpAPIKey, "--no-http-api")
	req, _ := http.NewRequest(http.MethodPost, s.jsonAPI(t, "").base+"ListOnline", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+httpAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("status %d, want 404", resp.StatusCode)
	}
}

// sseStream is a WatchEvents call over HTTP read as server-sent events.
type sseStream struct {
	t      testing.TB
	resp   *http.Response
	events chan sseEvent
}

type sseEvent struct {
	id, event, data string
}

// watchSSE opens a WatchEvents stream with body as its request and fails
// unless it is answered 200 text/event-stream.
func (j jsonAPI) watchSSE(body string, header ...string) *sseStream {
	j.t.Helper()
	resp, err := j.openSSE(body, header...)
	if err != nil {
		j.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		j.t.Fatalf("WatchEvents: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &sseStream{t: j.t, resp: resp, events: make(chan sseEvent, 1024)}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev != (sseEvent{}) {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	j.t.Cleanup(func() { resp.Body.Close() })
	return s
}

func (j jsonAPI) openSSE(body string, header ...string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, j.base+"WatchEvents", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if j.key != "" {
		req.Header.Set("Authorization", "Bearer "+j.key)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return http.DefaultClient.Do(req)
}

// next returns the next event, or fails after waitFor.
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			s.t.Fatalf("event stream ended")
		}
		return ev
	case <-time.After(waitFor):
		s.t.Fatalf("no event within %v", waitFor)
	}
	return sseEvent{}
}

// TestHTTPAPIWatchEvents: WatchEvents as server-sent events receives what
// real WebSocket clients do (online, an upstream message, offline), as the
// Event JSON; it takes the same request (kinds), the same key, and the
// same limits (--watch-max-per-key) as the gRPC call, and it ends with an
// error event when the server shuts down.
func TestHTTPAPIWatchEvents(t *testing.T) {
	s := startServer(t, "--api-keys", "orders:"+httpAPIKey, "--presence-grace", "0",
		"--upstream-users", "*", "--watch-max-per-key", "2")
	api := s.jsonAPI(t, httpAPIKey)

	// Refused before streaming: the status and error body of a unary call.
	resp, err := s.jsonAPI(t, "").openSSE(`{}`)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), `"code":"unauthenticated"`) {
		t.Errorf("without a key: %d %s, want 401 unauthenticated", resp.StatusCode, b)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"kinds":[9]}`, "kinds[0]: unknown event kind 9"},
		{`{"kinds":["EVENT_KIND_USER_ONLINE"],"kind":1}`, "request body: kind: unknown field"},
		{`{"kinds":"EVENT_KIND_USER_ONLINE"}`, "request body: kinds: "},
		{`{"kinds":["EVENT_KIND_ONLINE"]}`, "request body: kinds: "},
	} {
		resp, err := api.openSSE(tc.body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tc.want) {
			t.Errorf("request %s: %d %s, want 400 with %q", tc.body, resp.StatusCode, b, tc.want)
		}
	}

	all := api.watchSSE(`{}`)
	online := api.watchSSE(`{"kinds":["EVENT_KIND_USER_ONLINE"]}`)
	// The third stream of the key is over --watch-max-per-key.
	resp, err = api.openSSE(`{}`)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(b), "--watch-max-per-key") {
		t.Errorf("third stream: %d %s, want 429 naming --watch-max-per-key", resp.StatusCode, b)
	}

	c := s.dial(t, "merchant-42")
	ev := all.next()
	if !strings.Contains(ev.data, `"userOnline":{"userId":"merchant-42"}`) {
		t.Errorf("first event %+v, want merchant-42 online", ev)
	}
	if ev := online.next(); !strings.Contains(ev.data, `"userOnline":{"userId":"merchant-42"}`) {
		t.Errorf("online-only stream: %+v", ev)
	}
	if err := c.c.Write(context.Background(), websocket.MessageText, []byte("ready for orders")); err != nil {
		t.Fatal(err)
	}
	ev = all.next()
	var got struct {
		Time          string `json:"time"`
		ClientMessage struct {
			UserID string `json:"userId"`
			Text   string `json:"text"`
		} `json:"clientMessage"`
	}
	if err := json.Unmarshal([]byte(ev.data), &got); err != nil || got.ClientMessage.UserID != "merchant-42" || got.ClientMessage.Text != "ready for orders" || got.Time == "" {
		t.Errorf("client message event %+v (%v)", ev, err)
	}
	c.c.Close(websocket.StatusNormalClosure, "")
	if ev := all.next(); !strings.Contains(ev.data, `"userOffline":{"userId":"merchant-42"}`) {
		t.Errorf("after the close: %+v, want merchant-42 offline", ev)
	}

	// Shutdown ends the streams with UNAVAILABLE, as the gRPC ones.
	s.stop(t)
	ev = all.next()
	if ev.event != "error" || !strings.Contains(ev.data, `"code":"unavailable"`) {
		t.Errorf("at shutdown: %+v, want an error event with code unavailable", ev)
	}
	if _, ok := <-all.events; ok {
		t.Errorf("the stream went on after its error event")
	}
}

// TestHTTPAPIOverTLS: with --http-tls-cert the API is served over HTTPS,
// HTTP/2 included (what curl and most clients negotiate): a unary call,
// and an event stream that receives a wss:// client's coming online.
func TestHTTPAPIOverTLS(t *testing.T) {
	ca := newCA(t)
	ca.issue(t, "server", false)
	s := startServer(t, "--api-keys", "orders:"+httpAPIKey,
		"--http-tls-cert", ca.file("server.pem"), "--http-tls-key", ca.file("server-key.pem"))
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}, ForceAttemptHTTP2: true}}
	base := "https://" + s.app.HTTPAddr() + "/pushgate.v1.PushService/"
	post := func(method, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+method, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+httpAPIKey)
		resp, err := httpc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	resp := post("GetPresence", `{"userIds":["merchant-42"]}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || !strings.Contains(string(b), `"userId":"merchant-42","connections":0`) {
		t.Fatalf("GetPresence: %s %d %s", resp.Proto, resp.StatusCode, b)
	}

	resp = post("WatchEvents", `{"kinds":["EVENT_KIND_USER_ONLINE"]}`)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("WatchEvents: %s %d %s", resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "wss://"+s.app.HTTPAddr()+"/ws/merchant-42", &websocket.DialOptions{HTTPClient: httpc})
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	defer c.CloseNow()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			if strings.HasPrefix(line, "data: ") {
				if !strings.Contains(line, `"userOnline":{"userId":"merchant-42"}`) {
					t.Fatalf("event %s", line)
				}
				return
			}
		case <-ctx.Done():
			t.Fatal("no event within the deadline")
		}
	}
}
