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

// reference is the physical-limit yardstick for the benchmarks: a minimal
// server that accepts WebSockets (one reader goroutine per connection, which
// discards what it reads) and, for Broadcast and SendToUser, writes the
// payload straight to each socket from the calling goroutine: no queues, no
// ids, no inbox, no metrics, no limits. pushgate's numbers are read as a
// fraction of what this does on the same machine in the same run. It
// implements only the two calls the benchmarks make.
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	ref := &reference{users: map[string][]*websocket.Conn{}}
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	gl, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	pb.RegisterPushServiceServer(gs, ref)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{user}", ref.serveWS)
	hs := &http.Server{Handler: mux}
	go gs.Serve(gl)
	go hs.Serve(hl)
	line, _ := json.Marshal(map[string]string{"msg": "reference started", "http": hl.Addr().String(), "grpc": gl.Addr().String()})
	fmt.Fprintln(stderr, string(line))
	<-ctx.Done()
	gs.Stop()
	return hs.Close()
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
