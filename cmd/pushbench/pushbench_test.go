package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"

	pb "pushgate/gen/pushgate/v1"
)

func TestMain(m *testing.M) {
	// The scenarios start children by running this binary with "child".
	if len(os.Args) > 1 && os.Args[1] == "child" {
		if err := runChild(context.Background(), os.Stdin, os.Stdout); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// faulty is a reference server with injected faults: it drops or doubles
// the payloads whose sequence number the test picks.
type faulty struct {
	refServer
	drop, double func(seq int32) bool
}

func (f *faulty) Broadcast(ctx context.Context, req *pb.BroadcastRequest) (*pb.BroadcastResponse, error) {
	seq, _, _ := parsePayload([]byte(req.GetMessage().GetJson()))
	if f.drop(seq) {
		return &pb.BroadcastResponse{}, nil // claims success, delivers nothing
	}
	r, err := f.refServer.Broadcast(ctx, req)
	if f.double(seq) {
		f.refServer.Broadcast(ctx, req)
	}
	return r, err
}

func (f *faulty) SendToUser(ctx context.Context, req *pb.SendToUserRequest) (*pb.SendToUserResponse, error) {
	seq, _, _ := parsePayload([]byte(req.GetMessage().GetJson()))
	if f.drop(seq) {
		// Claims a delivery, writes nothing.
		return &pb.SendToUserResponse{Online: true, DeliveredConnections: 1}, nil
	}
	r, err := f.refServer.SendToUser(ctx, req)
	if f.double(seq) {
		f.refServer.SendToUser(ctx, req)
	}
	return r, err
}

// writers are the reference server's modes; the accounting tests run on
// each.
var writers = map[string]func() refServer{
	"floor":   func() refServer { return newFloor() },
	"library": func() refServer { return &reference{users: map[string][]*websocket.Conn{}} },
}

func startFaulty(t *testing.T, ref refServer, drop, double func(int32) bool) (ws, grpcAddr string) {
	f := &faulty{refServer: ref, drop: drop, double: double}
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	gs := grpc.NewServer()
	pb.RegisterPushServiceServer(gs, f)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{user}", ref.serveWS)
	hs := &http.Server{Handler: mux}
	go gs.Serve(gl)
	go hs.Serve(hl)
	t.Cleanup(func() { gs.Stop(); hs.Close() })
	return hl.Addr().String(), gl.Addr().String()
}

// benchConfig is a small run; Settle is generous for a loaded machine (a
// frame was seen arriving more than 5 s late while other suites ran; a run
// that gets everything ends its wait at once).
func benchConfig(ws, grpcAddr, scenario string) Config {
	return Config{Scenario: scenario, WS: ws, GRPC: grpcAddr, Conns: 100, Procs: 2, Rate: 200, Count: 30,
		Duration: 20 * time.Second, Payload: 64, Callers: 4, Settle: 15 * time.Second, ConnectPar: 50}
}

func TestCountsLossesAndDuplicates(t *testing.T) {
	never := func(int32) bool { return false }
	cases := []struct {
		name          string
		drop, double  func(int32) bool
		lost, doubled int64
	}{
		{"honest server", never, never, 0, 0},
		{"drops every 10th broadcast", func(s int32) bool { return s%10 == 0 }, never, 3 * 100, 0},
		{"sends every 7th twice", never, func(s int32) bool { return s%7 == 0 }, 0, 5 * 100},
	}
	for writer, newRef := range writers {
		for _, tc := range cases {
			countsLossesAndDuplicates(t, writer+": "+tc.name, newRef(), tc.drop, tc.double, tc.lost, tc.doubled)
		}
	}
}

func countsLossesAndDuplicates(t *testing.T, name string, ref refServer, drop, double func(int32) bool, lost, doubled int64) {
	ws, g := startFaulty(t, ref, drop, double)
	res, err := runScenario(context.Background(), benchConfig(ws, g, "fanout"), io.Discard)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if res.Connected != 100 || res.Sent != 30 {
		t.Fatalf("%s: %d connected, %d sent", name, res.Connected, res.Sent)
	}
	if res.Lost != lost || res.Duplicates != doubled {
		t.Errorf("%s: lost %d, duplicates %d; want %d, %d", name, res.Lost, res.Duplicates, lost, doubled)
	}
	if want := 30*100 - lost + doubled; res.Delivered != want {
		t.Errorf("%s: delivered %d, want %d", name, res.Delivered, want)
	}
	if lost == 0 && doubled == 0 && (res.Latency.N != 3000 || res.LastFrameLatency.N != 30) {
		t.Errorf("%s: latency samples %d / %d", name, res.Latency.N, res.LastFrameLatency.N)
	}
}

func TestUnicastAccounting(t *testing.T) {
	// Every 10th unicast claimed but never written, every 10th (another)
	// written twice.
	for writer, newRef := range writers {
		ws, g := startFaulty(t, newRef(), func(s int32) bool { return s%10 == 5 }, func(s int32) bool { return s%10 == 3 })
		cfg := benchConfig(ws, g, "unicast")
		cfg.Count = 200
		res, err := runScenario(context.Background(), cfg, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", writer, err)
		}
		if res.Lost != 20 || res.Duplicates != 20 || res.Delivered != 200 {
			t.Fatalf("%s: lost %d, duplicates %d, delivered %d; want 20, 20, 200", writer, res.Lost, res.Duplicates, res.Delivered)
		}
	}
}

func TestAccount(t *testing.T) {
	expected := map[string][]int32{"*": {1, 2}, "a": {5}}
	got := map[string][]int32{"a": {1, 2, 5, 5}, "b": {2}}
	d, lost, dups := account(expected, got, []string{"a", "b"})
	if d != 5 || lost != 1 || dups != 1 {
		t.Fatalf("delivered %d, lost %d, dups %d; want 5, 1, 1", d, lost, dups)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	p := payload(12345, 64)
	if len(p) != 64 {
		t.Fatalf("payload is %d bytes: %s", len(p), p)
	}
	seq, sent, ok := parsePayload([]byte(`{"op":"message","id":"x","ts":1,"data":` + p + `}`))
	if !ok || seq != 12345 || time.Since(time.Unix(0, sent)) > time.Minute {
		t.Fatalf("parse: %d %d %v", seq, sent, ok)
	}
	if _, _, ok := parsePayload([]byte(`{"op":"hello"}`)); ok {
		t.Fatal("a hello parsed as a payload")
	}
	ips, err := sourceIPs("127.0.0.2-127.0.0.5")
	if err != nil || len(ips) != 4 || ips[3] != "127.0.0.5" {
		t.Fatalf("source ips: %v %v", ips, err)
	}
}
