package server

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "pushgate/gen/pushgate/v1"
)

// cursorService is a PushService whose WatchEvents plays the resumable
// event log's contract, so that the SSE adapter's handling of cursors can
// be checked on its own: after_cursor "stale" is refused with OUT_OF_RANGE
// and the oldest cursor kept; any other resumes with three events whose
// cursors follow it, then ends with UNAVAILABLE.
type cursorService struct {
	pb.UnimplementedPushServiceServer
}

func (cursorService) WatchEvents(req *pb.WatchEventsRequest, stream grpc.ServerStreamingServer[pb.Event]) error {
	if req.GetAfterCursor() == "stale" {
		st, _ := status.New(codes.OutOfRange, "after_cursor: older than the oldest event kept (c-100)").WithDetails(
			&errdetails.ErrorInfo{Reason: "CURSOR_EXPIRED", Domain: "pushgate", Metadata: map[string]string{"oldest_cursor": "c-100"}})
		return st.Err()
	}
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for _, n := range []string{"1", "2", "3"} {
		ev := &pb.Event{Cursor: req.GetAfterCursor() + "." + n, Event: &pb.Event_UserOnline{UserOnline: &pb.UserOnline{UserId: "user-" + n}}}
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, "server shutting down; watch another node or retry")
}

func newSSETestServer(t *testing.T) string {
	gs := grpc.NewServer()
	pb.RegisterPushServiceServer(gs, cursorService{})
	h, err := NewHTTPHandler(gs, HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return hs.URL + "/pushgate.v1.PushService/WatchEvents"
}

func postWatch(t *testing.T, url, body, lastEventID string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	c := &http.Client{Timeout: 15 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(bufio.NewReader(resp.Body))
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestSSECursors: each event's cursor is its SSE id; after_cursor in the
// body resumes, and a Last-Event-ID header (what an SSE client sends when
// it reconnects) takes its place; the stream's end status is a last
// "error" event with the API's error body.
func TestSSECursors(t *testing.T) {
	url := newSSETestServer(t)
	for _, tc := range []struct{ name, body, lastEventID, from string }{
		{"after_cursor", `{"afterCursor":"c-7"}`, "", "c-7"},
		{"proto field name", `{"after_cursor":"c-7"}`, "", "c-7"},
		{"Last-Event-ID", `{}`, "c-7.2", "c-7.2"},
		{"Last-Event-ID over the body", `{"afterCursor":"c-1"}`, "c-7.2", "c-7.2"},
		{"empty body", ``, "c-9", "c-9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postWatch(t, url, tc.body, tc.lastEventID)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			want := ": watching\n\n" +
				"id: " + tc.from + ".1\n" +
				`data: {"time":null,"userOnline":{"userId":"user-1"},"cursor":"` + tc.from + `.1"}` + "\n\n" +
				"id: " + tc.from + ".2\n" +
				`data: {"time":null,"userOnline":{"userId":"user-2"},"cursor":"` + tc.from + `.2"}` + "\n\n" +
				"id: " + tc.from + ".3\n" +
				`data: {"time":null,"userOnline":{"userId":"user-3"},"cursor":"` + tc.from + `.3"}` + "\n\n" +
				"event: error\n" +
				`data: {"code":"unavailable","message":"server shutting down; watch another node or retry"}` + "\n\n"
			if body != want {
				t.Errorf("stream:\n%s\nwant:\n%s", body, want)
			}
		})
	}
}

// TestSSEStaleCursor: a refusal before the stream starts is an HTTP status
// with the error body, its details included (here the oldest cursor kept).
func TestSSEStaleCursor(t *testing.T) {
	resp, body := postWatch(t, newSSETestServer(t), `{}`, "stale")
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	for _, want := range []string{
		`"code":"out_of_range"`,
		`"message":"after_cursor: older than the oldest event kept (c-100)"`,
		`"type":"google.rpc.ErrorInfo"`,
		`"debug":{"reason":"CURSOR_EXPIRED","domain":"pushgate","metadata":{"oldest_cursor":"c-100"}}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %s:\n%s", want, body)
		}
	}
}

// ListOnline fails with the code its page_token names (a number).
func (cursorService) ListOnline(_ context.Context, req *pb.ListOnlineRequest) (*pb.ListOnlineResponse, error) {
	n, _ := strconv.Atoi(req.GetPageToken())
	return nil, status.Error(codes.Code(n), "failed as asked")
}

// TestHTTPStatusTable: the SSE adapter answers each code with the HTTP
// status the transcoder gives a unary call that ends with it, the Connect
// protocol's (the table in docs/http-api.md), and the same code name.
func TestHTTPStatusTable(t *testing.T) {
	gs := grpc.NewServer()
	pb.RegisterPushServiceServer(gs, cursorService{})
	h, err := NewHTTPHandler(gs, HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	defer hs.Close()
	want := map[codes.Code]int{
		codes.Canceled: 499, codes.Unknown: 500, codes.InvalidArgument: 400, codes.DeadlineExceeded: 504,
		codes.NotFound: 404, codes.AlreadyExists: 409, codes.PermissionDenied: 403, codes.ResourceExhausted: 429,
		codes.FailedPrecondition: 400, codes.Aborted: 409, codes.OutOfRange: 400, codes.Unimplemented: 501,
		codes.Internal: 500, codes.Unavailable: 503, codes.DataLoss: 500, codes.Unauthenticated: 401,
	}
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		resp, err := http.Post(hs.URL+"/pushgate.v1.PushService/ListOnline", "application/json",
			strings.NewReader(`{"pageToken":"`+strconv.Itoa(int(c))+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != HTTPStatus(c) || HTTPStatus(c) != want[c] {
			t.Errorf("%v: transcoder %d, table %d, documented %d", c, resp.StatusCode, HTTPStatus(c), want[c])
		}
		if !strings.Contains(string(b), `"code":"`+connectCode(c)+`"`) {
			t.Errorf("%v: body %s, want code %q", c, b, connectCode(c))
		}
	}
}

// quietService's WatchEvents sends its headers and no event.
type quietService struct {
	pb.UnimplementedPushServiceServer
}

func (quietService) WatchEvents(_ *pb.WatchEventsRequest, stream grpc.ServerStreamingServer[pb.Event]) error {
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// TestSSEKeepAlive: an idle stream gets a comment line every KeepAlive.
func TestSSEKeepAlive(t *testing.T) {
	gs := grpc.NewServer()
	pb.RegisterPushServiceServer(gs, quietService{})
	h, err := NewHTTPHandler(gs, HTTPOptions{KeepAlive: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	defer hs.Close()
	resp, err := http.Post(hs.URL+"/pushgate.v1.PushService/WatchEvents", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	for len(lines) < 4 && sc.Scan() {
		if sc.Text() != "" {
			lines = append(lines, sc.Text())
		}
	}
	if want := []string{": watching", ": keep-alive", ": keep-alive", ": keep-alive"}; strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("stream %q, want %q", lines, want)
	}
}

// TestSSEServerStopped: a WatchEvents call that reaches a stopped gRPC
// server is answered 503 unavailable, as over gRPC.
func TestSSEServerStopped(t *testing.T) {
	gs := grpc.NewServer()
	pb.RegisterPushServiceServer(gs, quietService{})
	h, err := NewHTTPHandler(gs, HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gs.Stop()
	hs := httptest.NewServer(h)
	defer hs.Close()
	resp, body := postWatch(t, hs.URL+"/pushgate.v1.PushService/WatchEvents", `{}`, "")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"unavailable"`) {
		t.Errorf("%d %s, want 503 unavailable", resp.StatusCode, body)
	}
}
