package server

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	spb "google.golang.org/genproto/googleapis/rpc/status"

	pb "pushgate/gen/pushgate/v1"
)

// The HTTP/JSON API: every PushService call as POST
// /pushgate.v1.PushService/<Method> with a JSON body (the Connect protocol's
// unary form), transcoded by vanguard into a gRPC call on the very
// grpc.Server that serves the gRPC listener, so that its interceptors (API
// keys, rate limit, validation, logging, metrics, recovery) apply
// unchanged. WatchEvents is also served as server-sent events (see watch).

// Defaults of HTTPOptions.
const (
	// DefaultMaxRequestBytes is grpc-go's default largest request message,
	// which the gRPC listener applies.
	DefaultMaxRequestBytes = 4 << 20
	// DefaultSSEKeepAlive is how often an idle event stream gets a comment
	// line, so that proxies and NAT keep it open (the gRPC listener pings).
	DefaultSSEKeepAlive = 30 * time.Second
)

// HTTPOptions bound the HTTP/JSON API's requests.
type HTTPOptions struct {
	// MaxRequestBytes is the largest request body; a larger one is answered
	// 413 unread. 0: DefaultMaxRequestBytes.
	MaxRequestBytes int
	// RequestTimeout bounds the time to read a request's body once its
	// headers arrived (--grpc-request-timeout, as for a gRPC call's request):
	// past it the request is answered 408. 0: DefaultRequestTimeout.
	RequestTimeout time.Duration
	// KeepAlive is how often an idle WatchEvents event stream gets a
	// comment line. 0: DefaultSSEKeepAlive.
	KeepAlive time.Duration
	// Registerer receives the API's metrics; nil: not registered.
	Registerer prometheus.Registerer
}

// HTTPAPI serves the HTTP/JSON API.
type HTTPAPI struct {
	inflight   inflight // requests being served
	o          HTTPOptions
	refused    *prometheus.CounterVec // requests answered before any call: by reason
	transcoder http.Handler
	grpc       http.Handler // the gRPC server's in-process HTTP handler
}

// apiPrefix is the path of every PushService method.
const apiPrefix = "/" + "pushgate.v1.PushService" + "/"

// NewHTTPHandler returns the HTTP/JSON API over s, which must have the
// PushService registered (NewGRPCServer). It serves paths under
// /pushgate.v1.PushService/.
func NewHTTPHandler(s *grpc.Server, o HTTPOptions) (*HTTPAPI, error) {
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = DefaultSSEKeepAlive
	}
	t, err := vanguard.NewTranscoder(
		[]*vanguard.Service{vanguard.NewService(pb.PushService_ServiceDesc.ServiceName, s)},
		vanguard.WithCodec(newJSONCodec),
		vanguard.WithUnknownHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeHTTPError(w, http.StatusNotFound, codes.Unimplemented, "no method "+strings.TrimPrefix(r.URL.Path, "/"))
		})),
		vanguard.WithDefaultServiceOptions(
			vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
			vanguard.WithTargetCodecs(vanguard.CodecProto),
			vanguard.WithMaxMessageBufferBytes(uint32(o.MaxRequestBytes)),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("HTTP/JSON API: %w", err)
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushgate_http_api_refused_total",
		Help: "HTTP/JSON API requests refused before a call was made, by reason: too_large (a body over the largest request, 413) or timeout (a body that did not arrive in time, 408).",
	}, []string{"reason"})
	if o.Registerer != nil {
		o.Registerer.MustRegister(refused)
	}
	return &HTTPAPI{o: o, refused: refused, transcoder: t, grpc: s}, nil
}

// newJSONCodec is protojson as the gRPC API's documentation describes the
// messages: unknown fields are refused (naming the field) rather than
// dropped, and answers carry every field, zero values included.
func newJSONCodec(res vanguard.TypeResolver) vanguard.Codec {
	return jsonCodec{&vanguard.JSONCodec{
		MarshalOptions:   protojson.MarshalOptions{Resolver: res, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{Resolver: res},
	}}
}

type jsonCodec struct{ *vanguard.JSONCodec }

// MarshalAppend writes compact JSON: protojson spaces its output at random
// (so that nobody relies on its bytes), which would make the same answer
// differ between builds.
func (c jsonCodec) MarshalAppend(b []byte, msg proto.Message) ([]byte, error) {
	return compactJSON(c.JSONCodec.MarshalAppend, b, msg)
}

// MarshalAppendStable: as MarshalAppend.
func (c jsonCodec) MarshalAppendStable(b []byte, msg proto.Message) ([]byte, error) {
	return compactJSON(c.JSONCodec.MarshalAppendStable, b, msg)
}

func compactJSON(marshal func([]byte, proto.Message) ([]byte, error), b []byte, msg proto.Message) ([]byte, error) {
	out, err := marshal(nil, msg)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Write(b)
	if err := json.Compact(&buf, out); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Unmarshal refuses a body that is not the request's JSON with
// INVALID_ARGUMENT, as the gRPC API refuses a bad request: protojson's
// message names the field (`unknown field "usrId"`, `invalid value for
// string field userId: 5`).
func (c jsonCodec) Unmarshal(b []byte, msg proto.Message) error {
	if err := c.JSONCodec.Unmarshal(b, msg); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, requestJSONError(msg.ProtoReflect().Descriptor(), b, err))
	}
	return nil
}

// requestJSONError words a protojson error as the API's other errors,
// naming the field (by its proto name, as validation does) where protojson
// does not: "request body: message.ttl: invalid
// google.protobuf.Duration value "ten minutes"".
func requestJSONError(md protoreflect.MessageDescriptor, body []byte, err error) error {
	if f := fieldError(md, body, ""); f != "" {
		return errors.New("request body: " + f)
	}
	return errors.New("request body: " + protojsonMessage(err))
}

// protojsonMessage is a protojson error's text without its "proto:" prefix
// (followed by a space or a no-break space, at random) and position.
func protojsonMessage(err error) string {
	msg := strings.TrimLeft(strings.TrimPrefix(err.Error(), "proto:"), " \u00a0")
	if strings.HasPrefix(msg, "(line ") {
		if i := strings.Index(msg, "): "); i > 0 {
			msg = msg[i+3:]
		}
	}
	return msg
}

// fieldError finds the first field (in the order of the body's keys) of a
// JSON object that protojson refuses, and says which and why: an unknown
// key, or a value of the wrong type. "" when the body is not a JSON object
// or every field alone is accepted.
func fieldError(md protoreflect.MessageDescriptor, body []byte, prefix string) string {
	keys, values, ok := objectFields(body)
	if !ok {
		return ""
	}
	for i, key := range keys {
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByTextName(key)
		}
		if fd == nil {
			return fmt.Sprintf("%s%s: unknown field", prefix, key)
		}
		name := prefix + string(fd.Name())
		one, _ := json.Marshal(map[string]json.RawMessage{key: values[i]})
		err := protojson.Unmarshal(one, dynamicpb.NewMessage(md))
		if err == nil {
			continue
		}
		// Inside a message field (not a well-known type, which JSON writes
		// as a string or a number): the field within it.
		if fd.Kind() == protoreflect.MessageKind && !fd.IsMap() && !strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf.") {
			if !fd.IsList() {
				if f := fieldError(fd.Message(), values[i], name+"."); f != "" {
					return f
				}
			} else {
				var elems []json.RawMessage
				if json.Unmarshal(values[i], &elems) == nil {
					for j, e := range elems {
						if f := fieldError(fd.Message(), e, fmt.Sprintf("%s[%d].", name, j)); f != "" {
							return f
						}
					}
				}
			}
		}
		return name + ": " + protojsonMessage(err)
	}
	return ""
}

// objectFields returns a JSON object's keys, in order, and values.
func objectFields(body []byte) (keys []string, values []json.RawMessage, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, false
		}
		keys, values = append(keys, key), append(values, v)
	}
	return keys, values, true
}

// Idle is closed once no request is being served. The gRPC server's
// GracefulStop closes the calls it serves through its HTTP handler at once,
// unlike those on its own connections: shutdown waits for Idle (after the
// service's Drain has ended the event streams) before stopping it, so that
// these calls finish and write their answers first.
func (h *HTTPAPI) Idle() <-chan struct{} { return h.inflight.idle() }

// ServeHTTP serves one call.
func (h *HTTPAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.inflight.add()
	defer h.inflight.done()
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	switch mt := mediaType(r.Header.Get("Content-Type")); {
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		writeHTTPError(w, http.StatusMethodNotAllowed, codes.Unimplemented, "use POST")
		return
	case mt == "application/json" && r.URL.Path == apiPrefix+"WatchEvents":
		h.watch(w, r, body)
		return
	case mt == "application/json":
		// A unary call in the Connect protocol, whose marker header plain
		// JSON callers need not send.
		r.Header.Set("Connect-Protocol-Version", "1")
	default:
		writeHTTPError(w, http.StatusUnsupportedMediaType, codes.InvalidArgument,
			fmt.Sprintf("Content-Type %q: send the request as application/json", r.Header.Get("Content-Type")))
		return
	}
	h.transcoder.ServeHTTP(w, r)
}

// readBody reads the whole request body, bounded in size by
// MaxRequestBytes and in time by RequestTimeout, and answers the request
// itself when it is too large or too slow.
func (h *HTTPAPI) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	max := int64(h.o.MaxRequestBytes)
	tooLarge := func() ([]byte, bool) {
		h.refused.WithLabelValues("too_large").Inc()
		w.Header().Set("Connection", "close") // the rest of the body stays unread
		writeHTTPError(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted,
			fmt.Sprintf("request body larger than %d bytes (the largest gRPC request message)", max))
		return nil, false
	}
	if r.ContentLength > max {
		return tooLarge()
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(h.o.RequestTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return tooLarge()
	case errors.Is(err, os.ErrDeadlineExceeded):
		h.refused.WithLabelValues("timeout").Inc()
		w.Header().Set("Connection", "close")
		writeHTTPError(w, http.StatusRequestTimeout, codes.Canceled,
			fmt.Sprintf("request body did not arrive within %v", h.o.RequestTimeout))
		return nil, false
	case err != nil:
		writeHTTPError(w, http.StatusBadRequest, codes.InvalidArgument, "reading the request body: "+err.Error())
		return nil, false
	}
	// The call may run longer than its request took to arrive (an event
	// stream for hours): only the request's arrival is bounded.
	_ = rc.SetReadDeadline(time.Time{})
	return body, true
}

// inflight counts the requests being served.
type inflight struct {
	mu      sync.Mutex
	n       int
	waiters []chan struct{}
}

func (f *inflight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 {
		for _, w := range f.waiters {
			close(w)
		}
		f.waiters = nil
	}
}

func (f *inflight) idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	if f.n == 0 {
		close(ch)
	} else {
		f.waiters = append(f.waiters, ch)
	}
	return ch
}

// mediaType is a Content-Type without its parameters, lower case.
func mediaType(contentType string) string {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// httpStatus is the HTTP status of each gRPC code, the Connect protocol's
// mapping (which the transcoder applies to unary calls).
var httpStatus = map[codes.Code]int{
	codes.Canceled:           499,
	codes.Unknown:            http.StatusInternalServerError,
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.FailedPrecondition: http.StatusBadRequest,
	codes.Aborted:            http.StatusConflict,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.Internal:           http.StatusInternalServerError,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.DataLoss:           http.StatusInternalServerError,
	codes.Unauthenticated:    http.StatusUnauthorized,
}

// HTTPStatus is the HTTP status the HTTP/JSON API answers a call that
// ended with code c.
func HTTPStatus(c codes.Code) int {
	if s, ok := httpStatus[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// connectCode is a gRPC code's name in the Connect protocol's error body:
// lower snake case ("invalid_argument").
func connectCode(c codes.Code) string {
	switch c {
	case codes.OK:
		return "ok"
	case codes.Canceled:
		return "canceled"
	}
	var b []byte
	for i, r := range c.String() {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b = append(b, '_')
			}
			r += 'a' - 'A'
		}
		b = append(b, byte(r))
	}
	return string(b)
}

// writeHTTPError answers with the error body every HTTP/JSON call uses:
// {"code": "invalid_argument", "message": "..."}.
func writeHTTPError(w http.ResponseWriter, status int, c codes.Code, msg string) {
	b, _ := json.Marshal(map[string]string{"code": connectCode(c), "message": msg})
	writeErrorBody(w, status, b)
}

func writeErrorBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// watch serves WatchEvents as server-sent events: the request is the JSON
// WatchEventsRequest (a Last-Event-ID header, which clients send when they
// reconnect, stands for after_cursor), and each event is one SSE event
// whose id is the event's cursor and whose data is the Event's JSON. The
// call goes to the gRPC server as a gRPC call (its in-process HTTP handler),
// so its interceptors and the service's watch limits apply as to any gRPC
// caller; watch only re-frames the answer. The SSE response starts when the
// watch is in place (the service sends its headers then), before the first
// event. An error before that (a missing key, a bad request, too many
// watchers) is answered with its HTTP status and the API's error body; one
// after it ends the stream with an "error" event whose data is that body.
func (h *HTTPAPI) watch(w http.ResponseWriter, r *http.Request, body []byte) {
	req := &pb.WatchEventsRequest{}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := protojson.Unmarshal(body, req); err != nil {
			writeHTTPError(w, http.StatusBadRequest, codes.InvalidArgument, requestJSONError(req.ProtoReflect().Descriptor(), body, err).Error())
			return
		}
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		req.AfterCursor = id
	}
	msg, err := proto.Marshal(req)
	if err != nil {
		writeHTTPError(w, http.StatusInternalServerError, codes.Internal, err.Error())
		return
	}
	framed := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(framed[1:], uint32(len(msg)))
	framed = append(framed, msg...)

	// The gRPC server's HTTP handler takes HTTP/2 requests only; it reads
	// no more of the connection than the request given here.
	inner := r.Clone(r.Context())
	inner.Proto, inner.ProtoMajor, inner.ProtoMinor = "HTTP/2.0", 2, 0
	inner.Header = http.Header{}
	for _, k := range []string{"Authorization", "User-Agent"} {
		if v := r.Header.Values(k); len(v) > 0 {
			inner.Header[k] = v
		}
	}
	inner.Header.Set("Content-Type", "application/grpc")
	inner.Header.Set("Te", "trailers")
	inner.Body = io.NopCloser(bytes.NewReader(framed))
	inner.ContentLength = int64(len(framed))

	sw := &sseWriter{w: w, header: http.Header{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { sw.keepAlive(h.o.KeepAlive, stop) })
	h.grpc.ServeHTTP(sw, inner)
	close(stop)
	wg.Wait()
	sw.finish()
}

// sseWriter takes the gRPC server's answer to a WatchEvents call (headers,
// length-prefixed Event messages, then the status in trailers) and writes
// it to w as server-sent events.
type sseWriter struct {
	w      http.ResponseWriter
	header http.Header // the gRPC answer's headers, then its trailers
	buf    []byte      // a message not complete yet

	mu      sync.Mutex // guards w's writes and the fields below
	started bool       // the SSE response's headers went out
	failed  error      // a write to w failed
	refused int        // the gRPC server answered this HTTP status, not a call
	refusal []byte     // and this body
}

func (s *sseWriter) Header() http.Header { return s.header }

// WriteHeader: the call's headers went out, so the watch is in place; the
// SSE response starts now, before the first event.
// Any other status is the gRPC server refusing the request as HTTP (it is
// stopped, or could not read the request): that answer is kept for finish.
func (s *sseWriter) WriteHeader(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code != http.StatusOK {
		s.refused = code
		return
	}
	s.start()
}

// Flush is called after each message; the gRPC server also calls it before
// writing the status of a call that failed before its headers, which must
// not start the stream.
func (s *sseWriter) Flush() {}

// start sends the SSE response's headers (s.mu held).
func (s *sseWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events on at once
	s.w.WriteHeader(http.StatusOK)
	// A first comment: some clients (curl -i) pass the headers on only
	// with the first bytes of the body.
	s.w.Write([]byte(": watching\n\n"))
	s.flush()
}

func (s *sseWriter) flush() {
	if err := http.NewResponseController(s.w).Flush(); err != nil && s.failed == nil {
		s.failed = err
	}
}

// Write takes the gRPC message stream: 5-byte prefixes (flag, length) and
// Event messages.
func (s *sseWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused != 0 {
		s.refusal = append(s.refusal, p...)
		return len(p), nil
	}
	s.start()
	s.buf = append(s.buf, p...)
	for len(s.buf) >= 5 {
		n := int(binary.BigEndian.Uint32(s.buf[1:5]))
		if len(s.buf) < 5+n {
			break
		}
		if err := s.event(s.buf[5 : 5+n]); err != nil {
			return 0, err
		}
		s.buf = s.buf[5+n:]
	}
	return len(p), s.failed
}

// eventJSON is protojson as the transcoder writes answers.
var eventJSON = protojson.MarshalOptions{EmitUnpopulated: true}

// event writes one Event as an SSE event (s.mu held).
func (s *sseWriter) event(msg []byte) error {
	ev := &pb.Event{}
	if err := proto.Unmarshal(msg, ev); err != nil {
		return err
	}
	data, err := compactJSON(eventJSON.MarshalAppend, nil, ev)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if c := ev.GetCursor(); c != "" {
		fmt.Fprintf(&b, "id: %s\n", c)
	}
	fmt.Fprintf(&b, "data: %s\n\n", data) // protojson writes no newlines
	if _, err := s.w.Write(b.Bytes()); err != nil {
		return err
	}
	s.flush()
	return s.failed
}

// finish writes the call's status: as the answer, if the stream has not
// started, else as a last "error" event (a stream ends with an error
// always: it ends when the server drains or the watcher falls behind).
func (s *sseWriter) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := grpcStatus(s.header)
	switch {
	case st != nil && st.Code() == codes.OK:
		return
	case st != nil:
	case s.refused != 0:
		st = status.New(codes.Internal, fmt.Sprintf("the gRPC server refused the call (%d): %s", s.refused, bytes.TrimSpace(s.refusal)))
	default:
		// It answered nothing: stopped.
		st = status.New(codes.Unavailable, "server shutting down; watch another node or retry")
	}
	body := errorBody(st)
	if !s.started {
		writeErrorBody(s.w, HTTPStatus(st.Code()), body)
		return
	}
	fmt.Fprintf(s.w, "event: error\ndata: %s\n\n", body)
	s.flush()
}

// grpcStatus reads a call's status from the trailers the gRPC server's HTTP
// handler wrote; nil when there is none.
func grpcStatus(h http.Header) *status.Status {
	get := func(k string) string {
		if v := h.Get(k); v != "" {
			return v
		}
		return h.Get(http.TrailerPrefix + k)
	}
	if b := get("Grpc-Status-Details-Bin"); b != "" {
		if raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b, "=")); err == nil {
			sp := &spb.Status{}
			if proto.Unmarshal(raw, sp) == nil {
				return status.FromProto(sp)
			}
		}
	}
	code, err := strconv.Atoi(get("Grpc-Status"))
	if err != nil {
		return nil
	}
	msg, _ := url.PathUnescape(get("Grpc-Message"))
	return status.New(codes.Code(code), msg)
}

// errorBody is the API's error body for st, as the transcoder writes it
// for unary calls: {"code": ..., "message": ..., "details": [{"type",
// "value", "debug"}]}.
func errorBody(st *status.Status) []byte {
	type detail struct {
		Type  string          `json:"type"`
		Value string          `json:"value"`
		Debug json.RawMessage `json:"debug,omitempty"`
	}
	out := struct {
		Code    string   `json:"code"`
		Message string   `json:"message,omitempty"`
		Details []detail `json:"details,omitempty"`
	}{Code: connectCode(st.Code()), Message: st.Message()}
	for _, a := range st.Proto().GetDetails() {
		d := detail{Type: string(a.MessageName()), Value: base64.RawStdEncoding.EncodeToString(a.GetValue())}
		if m, err := a.UnmarshalNew(); err == nil {
			d.Debug, _ = compactJSON(protojson.MarshalOptions{}.MarshalAppend, nil, m)
		}
		out.Details = append(out.Details, d)
	}
	b, _ := json.Marshal(out)
	return b
}

// keepAlive writes a comment line every interval while the stream is open.
func (s *sseWriter) keepAlive(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		if s.started {
			s.w.Write([]byte(": keep-alive\n\n"))
			s.flush()
		}
		s.mu.Unlock()
	}
}
