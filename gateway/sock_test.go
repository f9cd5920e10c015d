package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"pushgate/internal/wsframe"
)

// rawClient is a WebSocket client written from RFC 6455, so that the tests
// see the server's frames byte by byte.
type rawClient struct {
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr, path string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, addr, key)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsframe.AcceptKey(key) {
		t.Fatalf("handshake: %s, accept %q", resp.Status, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	return &rawClient{nc: nc, br: br}
}

// send writes a masked client frame.
func (c *rawClient) send(t testing.TB, op byte, p []byte) {
	t.Helper()
	b := []byte{0x80 | op, 0x80 | byte(len(p)), 1, 2, 3, 4}
	for i, x := range p {
		b = append(b, x^b[2+i%4])
	}
	if _, err := c.nc.Write(b); err != nil {
		t.Fatal(err)
	}
}

// rawFrame is a server frame as read off the socket.
type rawFrame struct {
	op      byte
	payload []byte
}

// read reads one server frame and checks what RFC 6455 (5.1, 5.2) requires
// of it: unmasked, no reserved bits, not fragmented (the server sends each
// message whole), and its length in the shortest encoding.
func (c *rawClient) read(t testing.TB) rawFrame {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		t.Fatalf("reading a frame header: %v", err)
	}
	if h[0]&0x80 == 0 || h[0]&0x70 != 0 {
		t.Fatalf("frame header %#x: want FIN and no reserved bits", h[0])
	}
	if h[1]&0x80 != 0 {
		t.Fatal("the server masked a frame")
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		io.ReadFull(c.br, b[:])
		if n = uint64(binary.BigEndian.Uint16(b[:])); n < 126 {
			t.Fatalf("length %d in 16 bits", n)
		}
	case 127:
		var b [8]byte
		io.ReadFull(c.br, b[:])
		if n = binary.BigEndian.Uint64(b[:]); n <= 0xFFFF || n>>63 != 0 {
			t.Fatalf("length %d in 64 bits", n)
		}
	}
	op := h[0] & 0x0F
	if op >= 0x8 && n > 125 {
		t.Fatalf("control frame %#x of %d bytes", op, n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.br, p); err != nil {
		t.Fatalf("reading a %d-byte payload: %v", n, err)
	}
	return rawFrame{op, p}
}

// The write loop encodes the data frames itself: each length encoding at
// its edges, text and binary, arrives whole and in order, with the
// library's pongs between whole frames while a burst is being written.
func TestWrittenFramesAreWellFormed(t *testing.T) {
	h, srv := testHub(t, Config{QueueMessages: 10000, QueueBytes: 64 << 20}, nil)
	addr := strings.TrimPrefix(srv.URL, "http://")
	c := dialRaw(t, addr, "/ws/u")
	waitConns(t, h, 1)

	ctx := context.Background()
	sizes := []int{0, 1, 125, 126, 127, 8 << 10, 8<<10 + 1, 65535, 65536, 200000}
	var want [][]byte
	for i, n := range sizes {
		p := bytes.Repeat([]byte{byte('a' + i)}, n)
		kind := KindBinary
		if i%2 == 0 {
			kind = KindText
		}
		if _, err := h.Engine().Broadcast(ctx, Push{Kind: kind, Data: p}, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	// A burst of small messages while the client pings: the pongs must
	// come between frames.
	for i := range 500 {
		p := []byte(fmt.Sprintf(`{"n":%d}`, i))
		if _, err := h.Engine().SendToUsers(ctx, []string{"u"}, Push{Kind: KindJSON, Data: p}); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
		if i%50 == 0 {
			// The longest a control frame may be at i == 250: the
			// library's write buffer (connWriteBuf) must hold its pong.
			c.send(t, wsframe.OpPing, pingPayload(i))
		}
	}
	pongs := 0
	for i := 0; i < len(want); {
		f := c.read(t)
		if f.op == wsframe.OpPong {
			if want := pingPayload(pongs * 50); !bytes.Equal(f.payload, want) {
				t.Fatalf("pong %d: %q, want %q", pongs, f.payload, want)
			}
			pongs++
			continue
		}
		wantOp := byte(wsframe.OpText)
		if i < len(sizes) && i%2 == 1 {
			wantOp = wsframe.OpBinary
		}
		if f.op != wantOp || !bytes.Equal(f.payload, want[i]) {
			t.Fatalf("frame %d: op %#x, %d bytes; want op %#x, %d bytes", i, f.op, len(f.payload), wantOp, len(want[i]))
		}
		i++
	}
	for pongs < 10 {
		if f := c.read(t); f.op != wsframe.OpPong {
			t.Fatalf("frame op %#x after the last message, want the remaining pongs", f.op)
		}
		pongs++
	}
}

func pingPayload(i int) []byte {
	if i == 250 {
		return bytes.Repeat([]byte{'p'}, 125)
	}
	return []byte(fmt.Sprint(i))
}

// After the client's close, the server answers with a close frame and
// writes nothing more, though messages keep coming for the user.
func TestNothingFollowsTheCloseFrame(t *testing.T) {
	h, srv := testHub(t, Config{}, nil)
	addr := strings.TrimPrefix(srv.URL, "http://")
	c := dialRaw(t, addr, "/ws/u")
	waitConns(t, h, 1)
	ctx := context.Background()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			h.Engine().SendToUsers(ctx, []string{"u"}, Push{Kind: KindJSON, Data: []byte(`{"x":1}`)})
			time.Sleep(100 * time.Microsecond)
		}
	}()
	defer func() { close(stop); <-done }()
	// Messages flow; then the client closes.
	for range 20 {
		if f := c.read(t); f.op != wsframe.OpText {
			t.Fatalf("op %#x, want text", f.op)
		}
	}
	c.send(t, wsframe.OpClose, []byte{0x03, 0xE8}) // 1000
	for {
		f := c.read(t)
		if f.op == wsframe.OpText {
			continue // written before the close arrived
		}
		if f.op != wsframe.OpClose {
			t.Fatalf("op %#x, want close", f.op)
		}
		if len(f.payload) < 2 || binary.BigEndian.Uint16(f.payload) != 1000 {
			t.Fatalf("close frame payload % x, want code 1000", f.payload)
		}
		break
	}
	rest, err := io.ReadAll(c.br)
	if len(rest) != 0 {
		t.Fatalf("%d bytes after the close frame (%v)", len(rest), err)
	}
}

func waitConns(t testing.TB, h *Hub, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for h.Connections() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want %d", h.Connections(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Once the library has written a close frame (its answer to the client's
// close, or ours), the write loop's frames are refused, not written.
func TestSockRefusesFramesAfterClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	s := &sock{Conn: server}
	if err := s.writeFrames(wsframe.Append(nil, wsframe.OpText, []byte("one")), nil); err != nil {
		t.Fatal(err)
	}
	// The library's ping and close, one whole frame per Write.
	s.Write(wsframe.Append(nil, wsframe.OpPing, []byte("1")))
	if err := s.writeFrames(wsframe.AppendHeader(nil, wsframe.OpBinary, 3), []byte("two")); err != nil {
		t.Fatal(err)
	}
	s.Write(wsframe.Append(nil, wsframe.OpClose, []byte{0x03, 0xE8}))
	if err := s.writeFrames(wsframe.Append(nil, wsframe.OpText, []byte("three")), nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a frame after the close frame: %v, want net.ErrClosed", err)
	}
	server.Close()
	got, _ := io.ReadAll(client)
	want := slices.Concat(
		wsframe.Append(nil, wsframe.OpText, []byte("one")),
		wsframe.Append(nil, wsframe.OpPing, []byte("1")),
		wsframe.Append(nil, wsframe.OpBinary, []byte("two")),
		wsframe.Append(nil, wsframe.OpClose, []byte{0x03, 0xE8}))
	if !bytes.Equal(got, want) {
		t.Fatalf("the socket got % x\nwant % x", got, want)
	}
}

// A fan-out's non-blocking first write leaves in pending what a client that
// is not reading has no room for; the write loop sends it once the client
// reads, whole and in order, before the frames queued behind it.
func TestFramesOutlastAFullSocket(t *testing.T) {
	h, srv := testHub(t, Config{QueueMessages: 1000, QueueBytes: 64 << 20, WriteTimeout: time.Minute}, nil)
	addr := strings.TrimPrefix(srv.URL, "http://")
	c := dialRaw(t, addr, "/ws/u")
	waitConns(t, h, 1)
	ctx := context.Background()
	var want [][]byte
	for i := range 40 {
		// Broadcasts go through the fan-out (Conn.writeNow); every 4th
		// message is a unicast, queued behind for the write loop.
		p := bytes.Repeat([]byte{byte('A' + i%26)}, 256<<10)
		if i%4 == 3 {
			p = []byte(fmt.Sprintf(`{"unicast":%d}`, i))
			if _, err := h.Engine().SendToUsers(ctx, []string{"u"}, Push{Kind: KindJSON, Data: p}); err != nil {
				t.Fatal(err)
			}
		} else if _, err := h.Engine().Broadcast(ctx, Push{Kind: KindBinary, Data: p}, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	for i, p := range want {
		f := c.read(t)
		if !bytes.Equal(f.payload, p) {
			t.Fatalf("frame %d: %d bytes starting %q, want %d bytes starting %q", i, len(f.payload), f.payload[:min(8, len(f.payload))], len(p), p[:8])
		}
	}
}
