package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Config is one pushbench run.
type Config struct {
	Scenario   string        // idle, fanout, unicast, storm, mixed
	Target     string        // pushgate (also the reference servers) or centrifugo
	WS         string        // server's HTTP address (host:port)
	GRPC       string        // server's gRPC address
	APIKey     string        // sent as authorization: Bearer (centrifugo: X-API-Key)
	Conns      int           // connections (one user each)
	Procs      int           // child processes holding them (0: one per 15,000)
	Rate       float64       // sends per second (fanout, unicast, mixed)
	Count      int           // sends in all (bounds the run)
	Duration   time.Duration // idle: how long to hold; others: longest send phase
	Payload    int           // payload bytes
	Envelope   bool          // connect with the pushgate.v1 subprotocol
	Callers    int           // concurrent gRPC callers (unicast)
	SourceIPs  string        // local addresses to spread sockets over, e.g. 127.0.0.2-127.0.0.50
	ServerPID  int           // server process, for memory and CPU
	JSON       bool          // print JSON instead of a table
	Settle     time.Duration // wait for deliveries after the last send
	ConnectPar int           // concurrent connects per child
}

func parseFlags(args []string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("pushbench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.Scenario, "scenario", "fanout", "idle, fanout, unicast, storm or mixed")
	fs.StringVar(&c.Target, "target", "pushgate", "pushgate (pushgate's protocol and gRPC API; also the reference servers) or centrifugo (its JSON protocol over ws://address/connection/websocket, one channel, publish through its HTTP API at http://address/api; idle and fanout only)")
	fs.StringVar(&c.WS, "ws", "127.0.0.1:8080", "server's HTTP `address` (WebSocket clients connect to ws://address/ws/USER); several comma-separated (nodes of a cluster): child process k connects to the k-th, in turn")
	fs.StringVar(&c.GRPC, "grpc", "127.0.0.1:9090", "server's gRPC `address`")
	fs.StringVar(&c.APIKey, "api-key", "", "API key for the gRPC calls (centrifugo: for its HTTP API)")
	fs.IntVar(&c.Conns, "conns", 1000, "WebSocket connections, one user each")
	fs.IntVar(&c.Procs, "procs", 0, "child processes holding the connections (0: one per 15,000)")
	fs.Float64Var(&c.Rate, "rate", 1, "sends per second")
	fs.IntVar(&c.Count, "count", 30, "sends in all")
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "idle: how long to hold the connections; others: the longest send phase")
	fs.IntVar(&c.Payload, "payload", 64, "payload size in bytes (at least 48)")
	fs.BoolVar(&c.Envelope, "envelope", false, "speak the envelope protocol (pushgate.v1) instead of raw")
	fs.IntVar(&c.Callers, "callers", 16, "concurrent gRPC callers (unicast, mixed)")
	fs.StringVar(&c.SourceIPs, "source-ips", "127.0.0.2-127.0.0.50", "local `addresses` to spread client sockets over: a range a.b.c.d-a.b.c.e, a list, or empty for the default")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "server `pid`, to report its memory (RSS) and CPU")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON")
	fs.DurationVar(&c.Settle, "settle", 10*time.Second, "how long to wait for deliveries after the last send")
	fs.IntVar(&c.ConnectPar, "connect-concurrency", 200, "concurrent connection attempts per child process")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch c.Scenario {
	case "idle", "fanout", "unicast", "storm", "mixed":
	default:
		return c, fmt.Errorf("--scenario %q: want idle, fanout, unicast, storm or mixed", c.Scenario)
	}
	switch {
	case c.Target == "pushgate":
	case c.Target != "centrifugo":
		return c, fmt.Errorf("--target %q: want pushgate or centrifugo", c.Target)
	case c.Scenario != "idle" && c.Scenario != "fanout":
		// Unicast would need a user per connection (tokens) and a
		// channel each: not the same work as SendToUser.
		return c, fmt.Errorf("--target centrifugo: only the idle and fanout scenarios, not %s", c.Scenario)
	case c.Envelope:
		return c, fmt.Errorf("--target centrifugo: --envelope is pushgate's protocol")
	}
	if c.Conns < 1 || c.Count < 1 || c.Rate <= 0 || c.Callers < 1 || c.ConnectPar < 1 {
		return c, fmt.Errorf("--conns, --count, --rate, --callers and --connect-concurrency must be positive")
	}
	if c.Payload < 48 {
		c.Payload = 48
	}
	if c.Procs <= 0 {
		c.Procs = (c.Conns + 14999) / 15000
	}
	if _, err := sourceIPs(c.SourceIPs); err != nil {
		return c, fmt.Errorf("--source-ips: %w", err)
	}
	return c, nil
}

// sourceIPs expands "a.b.c.d-a.b.c.e" or "ip,ip,...".
func sourceIPs(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		a, b := net.ParseIP(lo).To4(), net.ParseIP(hi).To4()
		if a == nil || b == nil || a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] > b[3] {
			return nil, fmt.Errorf("%q is not an IPv4 range within one /24", s)
		}
		var out []string
		for i := int(a[3]); i <= int(b[3]); i++ {
			out = append(out, fmt.Sprintf("%d.%d.%d.%d", a[0], a[1], a[2], i))
		}
		return out, nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		if net.ParseIP(strings.TrimSpace(p)) == nil {
			return nil, fmt.Errorf("%q is not an IP address", p)
		}
		out = append(out, strings.TrimSpace(p))
	}
	return out, nil
}
