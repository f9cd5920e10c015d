package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/coder/websocket"
	"google.golang.org/grpc"

	pb "pushgate/gen/pushgate/v1"
)

// reference is the reference server's --writer library mode: like floor, but
// through coder/websocket (the library pushgate uses): websocket.Accept for
// the handshake, its reader for each connection, and one Conn.Write per
// connection and message. Set beside floor it shows what the library's
// write path costs.
type reference struct {
	pb.UnimplementedPushServiceServer
	mu    sync.RWMutex
	users map[string][]*websocket.Conn
}

func runReference(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("pushbench reference", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", "127.0.0.1:8081", "WebSocket `address`")
	grpcAddr := fs.String("grpc", "127.0.0.1:9091", "gRPC `address`")
	writer := fs.String("writer", "floor", "floor (own handshake, frame encoded once per message, one write(2) per connection) or library (coder/websocket's Conn.Write)")
	workers := fs.Uint("grpc-workers", 64, "goroutines kept for gRPC calls (grpc.NumStreamWorkers, as pushgate's); 0: a new goroutine per call")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var srv refServer
	switch *writer {
	case "floor":
		srv = newFloor()
	case "library":
		srv = &reference{users: map[string][]*websocket.Conn{}}
	default:
		return fmt.Errorf("--writer %q: want floor or library", *writer)
	}
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	gl, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(grpc.NumStreamWorkers(uint32(*workers)))
	pb.RegisterPushServiceServer(gs, srv)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{user}", srv.serveWS)
	hs := &http.Server{Handler: mux}
	go gs.Serve(gl)
	go hs.Serve(hl)
	line, _ := json.Marshal(map[string]string{"msg": "reference started", "writer": *writer, "http": hl.Addr().String(), "grpc": gl.Addr().String()})
	fmt.Fprintln(stderr, string(line))
	<-ctx.Done()
	gs.Stop()
	return hs.Close()
}

// refServer is a reference server: the two gRPC calls and the WebSocket
// endpoint.
type refServer interface {
	pb.PushServiceServer
	serveWS(http.ResponseWriter, *http.Request)
}

func (r *reference) serveWS(w http.ResponseWriter, req *http.Request) {
	c, err := websocket.Accept(w, req, nil)
	if err != nil {
		return
	}
	user := req.PathValue("user")
	r.mu.Lock()
	r.users[user] = append(r.users[user], c)
	r.mu.Unlock()
	for {
		if _, _, err := c.Read(context.Background()); err != nil {
			break
		}
	}
	r.mu.Lock()
	list := r.users[user]
	for i, x := range list {
		if x == c {
			r.users[user] = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(r.users[user]) == 0 {
		delete(r.users, user)
	}
	r.mu.Unlock()
}

func (r *reference) write(conns []*websocket.Conn, p []byte) int64 {
	var n int64
	for _, c := range conns {
		if c.Write(context.Background(), websocket.MessageText, p) == nil {
			n++
		}
	}
	return n
}

func (r *reference) Broadcast(_ context.Context, req *pb.BroadcastRequest) (*pb.BroadcastResponse, error) {
	r.mu.RLock()
	var all []*websocket.Conn
	for _, cs := range r.users {
		all = append(all, cs...)
	}
	r.mu.RUnlock()
	return &pb.BroadcastResponse{DeliveredConnections: r.write(all, []byte(req.GetMessage().GetJson()))}, nil
}

func (r *reference) SendToUser(_ context.Context, req *pb.SendToUserRequest) (*pb.SendToUserResponse, error) {
	r.mu.RLock()
	cs := append([]*websocket.Conn(nil), r.users[req.GetUserId()]...)
	r.mu.RUnlock()
	n := r.write(cs, []byte(req.GetMessage().GetJson()))
	return &pb.SendToUserResponse{Online: len(cs) > 0, DeliveredConnections: int32(n)}, nil
}
