package redistest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartReplica runs a redis-server (persistence off) that replicates the
// Redis at masterAddr (host:port), and waits until its link is up.
func StartReplica(t testing.TB, masterAddr string) *Server {
	t.Helper()
	host, port, err := net.SplitHostPort(masterAddr)
	if err != nil {
		t.Fatal(err)
	}
	s := StartWith(t, "--replicaof", host, port)
	WaitInfo(t, s.Addr(), "replication", "master_link_status:up")
	return s
}

// WaitInfo waits until the INFO section of the Redis at addr holds line.
func WaitInfo(t testing.TB, addr, section, line string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := c.Info(context.Background(), section).Result()
		if err == nil && strings.Contains(info, line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: INFO %s never showed %q: %v\n%s", addr, section, line, err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartSentinels runs n sentinels (a majority is the quorum) that monitor
// the master at masterAddr as "mymaster", with a 3s down-after (1s let a
// starved machine take a slow pong for a dead master and fail over again),
// and waits until each knows the others and replicas replicas. It returns
// their addresses.
func StartSentinels(t testing.TB, n int, masterAddr string, replicas int) []string {
	t.Helper()
	host, port, err := net.SplitHostPort(masterAddr)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for range n {
		p := freePort(t)
		conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\nsentinel monitor mymaster %s %s %d\n"+
			"sentinel down-after-milliseconds mymaster 3000\nsentinel failover-timeout mymaster 10000\nsentinel parallel-syncs mymaster 1\n",
			p, host, port, n/2+1)
		path := t.TempDir() + "/sentinel.conf"
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("redis-server", path, "--sentinel")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := "127.0.0.1:" + strconv.Itoa(p)
		waitPing(t, addr)
		addrs = append(addrs, addr)
	}
	for _, a := range addrs {
		s := redis.NewSentinelClient(&redis.Options{Addr: a})
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx := context.Background()
			ss, err1 := s.Sentinels(ctx, "mymaster").Result()
			rs, err2 := s.Replicas(ctx, "mymaster").Result()
			if err1 == nil && err2 == nil && len(ss) == n-1 && len(rs) >= replicas {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sentinel %s: knows %d sentinels and %d replicas (%v %v), want %d and %d", a, len(ss), len(rs), err1, err2, n-1, replicas)
			}
			time.Sleep(100 * time.Millisecond)
		}
		s.Close()
	}
	return addrs
}

// MasterAddr asks the sentinel at sentinel for mymaster's address.
func MasterAddr(t testing.TB, sentinel string) string {
	t.Helper()
	s := redis.NewSentinelClient(&redis.Options{Addr: sentinel})
	defer s.Close()
	r, err := s.GetMasterAddrByName(context.Background(), "mymaster").Result()
	if err != nil {
		t.Fatalf("sentinel %s: %v", sentinel, err)
	}
	return net.JoinHostPort(r[0], r[1])
}

// Proxy forwards TCP to a Redis. Once FreezeReplication is called it drops
// whatever the Redis sends on replication links (connections whose client
// sent SYNC or PSYNC): a replica behind it receives no more writes while
// its link still looks up, as a replica falling behind does. Every other
// connection (clients, sentinels) is forwarded as it is. A connection ends
// on both sides as soon as either side ends it, and what was dropped is
// never delivered.
type Proxy struct {
	ln     net.Listener
	target string
	frozen atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
}

// StartProxy listens on a free loopback port and forwards to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// FreezeReplication starts dropping what the Redis sends its replicas.
func (p *Proxy) FreezeReplication() { p.frozen.Store(true) }

func (p *Proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		var repl atomic.Bool
		go func() { // client -> Redis, watching for a replica's SYNC or PSYNC
			defer in.Close()
			defer out.Close()
			buf := make([]byte, 32<<10)
			var head []byte
			for {
				n, err := in.Read(buf)
				if n > 0 {
					if !repl.Load() && len(head) < 4096 {
						head = append(head, buf[:n]...)
						if bytes.Contains(head, []byte("SYNC")) {
							repl.Store(true)
						}
					}
					if _, werr := out.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() { // Redis -> client
			defer in.Close()
			defer out.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := out.Read(buf)
				if n > 0 && !(repl.Load() && p.frozen.Load()) {
					if _, werr := in.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}
