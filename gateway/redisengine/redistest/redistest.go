// Package redistest runs a real redis-server for tests.
package redistest

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process on a loopback port, with persistence off
// and a directory of its own.
type Server struct {
	t    testing.TB
	Port int
	cmd  *exec.Cmd
	args []string // more redis-server options, after the defaults (StartWith)
}

// Start runs redis-server on a free port and waits until it answers. Without
// redis-server the test is skipped, except under CI (CI set), where that is
// a failure: `make test` installs it.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t)
}

// StartWith is Start with more redis-server options (--name value pairs),
// which override the defaults and stay for Restart.
func StartWith(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found; `make deps` installs it")
		}
		t.Skip("redis-server not found; `make deps` installs it")
	}
	// A directory of its own: a replica writes the RDB it syncs there, and
	// a server loads what it finds there at start.
	args = append([]string{"--dir", t.TempDir()}, args...)
	s := &Server{t: t, Port: freePort(t), args: args}
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Kill stops the server at once (SIGKILL); its data is gone.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server (again) on the same port and waits for it.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	args := append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no"}, s.args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	waitPing(s.t, s.Addr())
}

// Client returns a client of the server, closed at the end of the test.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Stats returns the server's commands processed and network bytes in and
// out so far (INFO stats).
func (s *Server) Stats(ctx context.Context) (cmds, in, out int64, err error) {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	info, err := c.Info(ctx, "stats").Result()
	if err != nil {
		return 0, 0, 0, err
	}
	get := func(k string) int64 {
		var v int64
		for _, line := range strings.Split(info, "\n") {
			if n, _ := fmt.Sscanf(strings.TrimSuffix(line, "\r"), k+":%d", &v); n == 1 {
				return v
			}
		}
		return -1
	}
	return get("total_commands_processed"), get("total_net_input_bytes"), get("total_net_output_bytes"), nil
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitPing waits until a Redis (or sentinel) on addr answers PING.
func waitPing(t testing.TB, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartSentinel runs a Redis Sentinel that monitors master under the name
// "mymaster" and returns its address.
func StartSentinel(t testing.TB, master *Server) string {
	t.Helper()
	port := freePort(t)
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\nsentinel monitor mymaster 127.0.0.1 %d 1\nsentinel down-after-milliseconds mymaster 2000\n", port, master.Port)
	path := t.TempDir() + "/sentinel.conf"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", path, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitPing(t, addr)
	return addr
}

// StartCluster runs a Redis Cluster of three masters (no replicas) and
// returns their addresses once every slot is served.
func StartCluster(t testing.TB) []string {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli not found")
	}
	var addrs []string
	dir := t.TempDir()
	for i := range 3 {
		port := freePort(t)
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--protected-mode", "no", "--cluster-enabled", "yes",
			"--cluster-config-file", fmt.Sprintf("%s/nodes-%d.conf", dir, i), "--dir", dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := "127.0.0.1:" + strconv.Itoa(port)
		waitPing(t, addr)
		addrs = append(addrs, addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// Every node, not only the first: each learns of the slots' owners
	// on its own, and answers CLUSTERDOWN until it has.
	cl := &Cluster{t: t}
	for _, addr := range addrs {
		cl.WaitOK(addr)
	}
	return addrs
}

// Cluster is a Redis Cluster of masters with replicas, run by the test.
type Cluster struct {
	t     testing.TB
	Addrs []string // every node, masters first (as redis-cli created it)
	procs map[string]*exec.Cmd
}

// StartReplicatedCluster runs a Redis Cluster of masters masters with
// replicas replicas each, fails over within about a second of a master's
// death (cluster-node-timeout 1000), and keeps serving the slots of the
// live masters while one is down (cluster-require-full-coverage no). It
// returns once every slot is served.
func StartReplicatedCluster(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli not found")
	}
	c := &Cluster{t: t, procs: map[string]*exec.Cmd{}}
	for range masters * (1 + replicas) {
		port := freePort(t)
		dir := t.TempDir() // each its own: a replica writes the RDB it syncs there
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--protected-mode", "no", "--cluster-enabled", "yes",
			"--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no",
			"--repl-diskless-sync-delay", "0", "--cluster-config-file", dir+"/nodes.conf", "--dir", dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c.procs[addr] = cmd
		t.Cleanup(func() { c.Kill(addr) })
		waitPing(t, addr)
		c.Addrs = append(c.Addrs, addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, addr := range c.Addrs {
		c.WaitOK(addr)
	}
	// A replica that never synced is not allowed to take over: wait for
	// each one's link to its master.
	for _, addr := range c.Addrs {
		rc := redis.NewClient(&redis.Options{Addr: addr})
		deadline := time.Now().Add(30 * time.Second)
		for {
			info, err := rc.Info(context.Background(), "replication").Result()
			if err == nil && (strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s not in sync: %v %s", addr, err, info)
			}
			time.Sleep(100 * time.Millisecond)
		}
		rc.Close()
	}
	return c
}

// Kill stops a node at once (SIGKILL).
func (c *Cluster) Kill(addr string) {
	if cmd := c.procs[addr]; cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		delete(c.procs, addr)
	}
}

// WaitOK waits until the node at addr reports every slot served.
func (c *Cluster) WaitOK(addr string) {
	c.t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := rc.ClusterInfo(context.Background()).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster not ready: %v %s", err, info)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MasterOf returns the address of the master serving slot, as the live
// node at via sees it ("" when none is online).
func (c *Cluster) MasterOf(via string, slot int) string {
	c.t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: via})
	defer rc.Close()
	shards, err := rc.ClusterShards(context.Background()).Result()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if int64(slot) < r.Start || int64(slot) > r.End {
				continue
			}
			for _, n := range sh.Nodes {
				if n.Role == "master" && n.Health == "online" {
					return n.IP + ":" + strconv.FormatInt(n.Port, 10)
				}
			}
		}
	}
	return ""
}

// MoveSlot moves one slot, and its keys, from the master serving it to
// the master at to, as redis-cli --cluster reshard does for each slot
// (IMPORTING, MIGRATING, MIGRATE of its keys, then the slot's new owner
// told to every master).
func (c *Cluster) MoveSlot(slot int, to string) {
	c.t.Helper()
	ctx := context.Background()
	from := c.MasterOf(to, slot)
	src, dst := redis.NewClient(&redis.Options{Addr: from}), redis.NewClient(&redis.Options{Addr: to})
	defer src.Close()
	defer dst.Close()
	srcID, err1 := src.Do(ctx, "CLUSTER", "MYID").Text()
	dstID, err2 := dst.Do(ctx, "CLUSTER", "MYID").Text()
	if err := cmp.Or(err1, err2, dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err(),
		src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err()); err != nil {
		c.t.Fatal(err)
	}
	host, port, _ := strings.Cut(to, ":")
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		if err != nil {
			c.t.Fatal(err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := src.Do(ctx, args...).Err(); err != nil {
			c.t.Fatal(err)
		}
	}
	for addr := range c.procs {
		rc := redis.NewClient(&redis.Options{Addr: addr})
		if info, _ := rc.Info(ctx, "replication").Result(); strings.Contains(info, "role:master") {
			if err := rc.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err(); err != nil {
				c.t.Fatal(err)
			}
		}
		rc.Close()
	}
	c.WaitOK(to)
}
