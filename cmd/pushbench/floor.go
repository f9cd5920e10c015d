package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"

	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/wsframe"
)

// floor is the reference server's default mode and the benchmarks' floor:
// what pushing a message to N WebSockets must cost on this machine. It
// upgrades the connection itself (RFC 6455 handshake, no library), gives each
// connection one reader goroutine that discards what it reads (with a
// 128-byte buffer), and for Broadcast and SendToUser encodes the frame once
// and writes it to each socket with one write(2) from the calling goroutine.
// Nothing else: no queues, no ids, no timeouts, no pings, no close handshake,
// no limits. It implements only the two calls the benchmarks make.
type floor struct {
	pb.UnimplementedPushServiceServer
	mu    sync.RWMutex
	users map[string][]*floorConn
}

// floorConn is one client socket. mu keeps the frames of concurrent calls
// whole.
type floorConn struct {
	mu sync.Mutex
	nc net.Conn
}

func newFloor() *floor { return &floor{users: map[string][]*floorConn{}} }

func (f *floor) serveWS(w http.ResponseWriter, req *http.Request) {
	key := req.Header.Get("Sec-WebSocket-Key")
	if key == "" || req.Header.Get("Sec-WebSocket-Version") != "13" ||
		!strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "not a WebSocket handshake", http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	if _, err := nc.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		wsframe.AcceptKey(key) + "\r\n\r\n")); err != nil {
		nc.Close()
		return
	}
	// What the client sent right behind its handshake is discarded with
	// the rest; net/http's 4 KiB buffers are let go.
	_, _ = brw.Reader.Discard(brw.Reader.Buffered())
	c := &floorConn{nc: nc}
	user := req.PathValue("user")
	f.mu.Lock()
	f.users[user] = append(f.users[user], c)
	f.mu.Unlock()
	// A fresh goroutine with a small stack reads; the handler's (grown by
	// the handshake) ends.
	go f.read(user, c)
}

func (f *floor) read(user string, c *floorConn) {
	buf := make([]byte, 128)
	for {
		if _, err := c.nc.Read(buf); err != nil {
			break
		}
	}
	f.mu.Lock()
	list := f.users[user]
	for i, x := range list {
		if x == c {
			f.users[user] = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(f.users[user]) == 0 {
		delete(f.users, user)
	}
	f.mu.Unlock()
	c.nc.Close()
}

func (f *floor) write(conns []*floorConn, frame []byte) int64 {
	var n int64
	for _, c := range conns {
		c.mu.Lock()
		_, err := c.nc.Write(frame)
		c.mu.Unlock()
		if err == nil {
			n++
		}
	}
	return n
}

func (f *floor) Broadcast(_ context.Context, req *pb.BroadcastRequest) (*pb.BroadcastResponse, error) {
	frame := wsframe.Append(nil, wsframe.OpText, []byte(req.GetMessage().GetJson()))
	f.mu.RLock()
	var all []*floorConn
	for _, cs := range f.users {
		all = append(all, cs...)
	}
	f.mu.RUnlock()
	return &pb.BroadcastResponse{DeliveredConnections: f.write(all, frame)}, nil
}

func (f *floor) SendToUser(_ context.Context, req *pb.SendToUserRequest) (*pb.SendToUserResponse, error) {
	frame := wsframe.Append(nil, wsframe.OpText, []byte(req.GetMessage().GetJson()))
	f.mu.RLock()
	cs := append([]*floorConn(nil), f.users[req.GetUserId()]...)
	f.mu.RUnlock()
	n := f.write(cs, frame)
	return &pb.SendToUserResponse{Online: len(cs) > 0, DeliveredConnections: int32(n)}, nil
}
