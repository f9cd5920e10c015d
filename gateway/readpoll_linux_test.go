package gateway

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pushgate/internal/promtest"
	"pushgate/internal/wsframe"
)

// An idle connection holds no goroutine: its read loop parks in the hub's
// poller (readpoll.go) and a new one starts when bytes come, which still
// reads everything: two frames in one packet (the second left in the
// library's buffer, not in the socket), an empty pong with a frame behind
// it, a pong with a payload; and the end of the stream when the client
// goes. With the poller closed the read loops wait on their own
// goroutines (sock.waitReadable), and read the same.
func TestIdleReaderParks(t *testing.T) {
	h, srv := testHub(t, Config{HeartbeatInterval: time.Hour}, nil)
	addr := strings.TrimPrefix(srv.URL, "http://")
	c := dialRaw(t, addr, "/ws/u")
	waitConns(t, h, 1)
	conn := h.userConns(nil, "u")[0]
	parked := func() bool {
		conn.mu.Lock()
		defer conn.mu.Unlock()
		return conn.parked && readLoops() == 0
	}
	waitFor(t, "the read loop to park", parked)

	exchange := func() {
		t.Helper()
		for range 3 {
			var two []byte
			for range 2 {
				mask := [4]byte{9, 8, 7, 6}
				two = append(two, 0x81, 0x80|4, mask[0], mask[1], mask[2], mask[3])
				for i, b := range []byte("ping") {
					two = append(two, b^mask[i%4])
				}
			}
			if _, err := c.nc.Write(two); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if f := c.read(t); string(f.payload) != `{"type":"pong"}` {
					t.Fatalf("got %q, want the pong", f.payload)
				}
			}
		}
		// An empty pong (taken off the socket by the peek) with a frame
		// right behind it in the same packet, then a pong with a payload
		// (left to the library), then a frame.
		mask := [4]byte{5, 6, 7, 8}
		masked := func(op byte, p string) []byte {
			b := []byte{0x80 | op, 0x80 | byte(len(p)), mask[0], mask[1], mask[2], mask[3]}
			for i := range len(p) {
				b = append(b, p[i]^mask[i%4])
			}
			return b
		}
		for _, packet := range [][]byte{
			append(masked(wsframe.OpPong, ""), masked(wsframe.OpText, "ping")...),
			append(masked(wsframe.OpPong, "hi"), masked(wsframe.OpText, "ping")...),
		} {
			if _, err := c.nc.Write(packet); err != nil {
				t.Fatal(err)
			}
			if f := c.read(t); string(f.payload) != `{"type":"pong"}` {
				t.Fatalf("got %q, want the pong", f.payload)
			}
		}
	}
	exchange()
	waitFor(t, "the read loop to park again", parked)

	h.reads.close()
	waitFor(t, "the read loop to wait on its own goroutine", readerWaits)
	exchange()
	c.nc.(*net.TCPConn).CloseWrite() // FIN, no close frame
	waitConns(t, h, 0)
	waitFor(t, "the read loop to end", func() bool { return h.live.Load() == 0 })
}

// A connection closed by the server while its read loop is parked ends as
// any other: counted and logged at the end of a read loop that the close
// starts, and the hub's live count back to zero (Shutdown waits for it).
// Its poller registration goes with it.
func TestParkedConnectionClosedByServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, srv := testHubReg(t, Config{HeartbeatInterval: time.Hour}, nil, MemoryEngine(), reg)
	addr := strings.TrimPrefix(srv.URL, "http://")
	var clients []*rawClient
	for i := range 20 {
		clients = append(clients, dialRaw(t, addr, fmt.Sprintf("/ws/u%d", i%2)))
	}
	waitConns(t, h, 20)
	waitFor(t, "every read loop to park", func() bool { return readLoops() == 0 })
	if n := h.CloseUser("u0", "bye"); n != 10 {
		t.Fatalf("CloseUser closed %d, want 10", n)
	}
	for i, c := range clients {
		if i%2 != 0 {
			continue
		}
		f := c.read(t)
		if f.op != wsframe.OpClose || binary.BigEndian.Uint16(f.payload) != uint16(CloseKicked.Code) {
			t.Fatalf("client %d got op %d %q, want the close %d", i, f.op, f.payload, CloseKicked.Code)
		}
		c.nc.Close() // no close reply: the server's close handshake gives up
	}
	waitConns(t, h, 10)
	waitFor(t, "the kicked connections' read loops to end", func() bool { return h.live.Load() == 10 })
	if v := promtest.Value(t, reg, "pushgate_connections_closed_total"); v != 10 {
		t.Fatalf("connections closed = %v, want the 10 kicked", v)
	}
	h.reads.mu.Lock()
	registered := len(h.reads.conns)
	h.reads.mu.Unlock()
	if registered != 10 {
		t.Fatalf("%d connections registered with the poller, want 10", registered)
	}
	// The heartbeat's close of a silent peer, parked too.
	h2, srv2 := testHub(t, Config{HeartbeatInterval: 200 * time.Millisecond, HeartbeatTimeout: 200 * time.Millisecond}, nil)
	silent := dialRaw(t, strings.TrimPrefix(srv2.URL, "http://"), "/ws/s")
	defer silent.nc.Close()
	waitConns(t, h2, 1)
	waitConns(t, h2, 0)
	waitFor(t, "the silent connection's read loop to end", func() bool { return h2.live.Load() == 0 })
}

// Where epoll refuses a socket (no room for another watch:
// fs.epoll.max_user_watches), its read loop waits on its own goroutine and
// reads as before; so does a connection closed while its read loop parks.
func TestParkRefusedWaits(t *testing.T) {
	epollCtl = func(int, int, int, *syscall.EpollEvent) error { return syscall.ENOSPC }
	t.Cleanup(func() { epollCtl = syscall.EpollCtl })
	h, srv := testHub(t, Config{HeartbeatInterval: time.Hour}, nil)
	c := dialRaw(t, strings.TrimPrefix(srv.URL, "http://"), "/ws/u")
	waitConns(t, h, 1)
	waitFor(t, "the read loop to wait on its own goroutine", readerWaits)
	conn := h.userConns(nil, "u")[0]
	conn.mu.Lock()
	parked := conn.parked
	conn.mu.Unlock()
	if parked {
		t.Fatal("parked, with epoll refusing the socket")
	}
	c.send(t, wsframe.OpText, []byte("ping"))
	if f := c.read(t); string(f.payload) != `{"type":"pong"}` {
		t.Fatalf("got %q, want the pong", f.payload)
	}
	c.nc.Close()
	waitConns(t, h, 0)
	waitFor(t, "the read loop to end", func() bool { return h.live.Load() == 0 })
	h.reads.mu.Lock()
	registered := len(h.reads.conns)
	h.reads.mu.Unlock()
	if registered != 0 {
		t.Fatalf("%d connections left registered with the poller", registered)
	}
}

// BenchmarkClientFrames measures what a client's frame costs the read
// side over TCP: per op, each of 200 raw connections sends a "ping" and
// reads its pong, all at once (ns/frame divides by 200). parked is the
// default, each read loop parking in the hub's poller between frames
// (readpoll.go), so every frame wakes a new one; waiting has the poller
// closed, each read loop waiting on its own goroutine.
func BenchmarkClientFrames(b *testing.B) {
	const n = 200
	for _, mode := range []string{"parked", "waiting"} {
		b.Run(mode, func(b *testing.B) {
			h, srv := testHub(b, Config{HeartbeatInterval: time.Hour}, nil)
			addr := strings.TrimPrefix(srv.URL, "http://")
			clients := make([]*rawClient, n)
			for i := range clients {
				clients[i] = dialRaw(b, addr, fmt.Sprintf("/ws/u%d", i))
			}
			waitConns(b, h, n)
			if mode == "waiting" {
				h.reads.close()
			}
			mask := [4]byte{1, 2, 3, 4}
			ping := []byte{0x81, 0x80 | 4, mask[0], mask[1], mask[2], mask[3]}
			for i, x := range []byte("ping") {
				ping = append(ping, x^mask[i%4])
			}
			errs := make(chan error, n)
			b.ResetTimer()
			for range b.N {
				for _, c := range clients {
					go func() {
						if _, err := c.nc.Write(ping); err != nil {
							errs <- err
							return
						}
						f, err := c.readFrame()
						if err == nil && string(f.payload) != `{"type":"pong"}` {
							err = fmt.Errorf("got %q, want the pong", f.payload)
						}
						errs <- err
					}()
				}
				for range clients {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
		})
	}
}
