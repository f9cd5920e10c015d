package config

import (
	"io"
	"strings"
	"testing"
)

// --redis-url with several URLs separated by spaces names shards: each is
// parsed like a single URL (hosts, Sentinel, Cluster), a bad one is named
// by its index; the event webhook works with several.
func TestRedisShardURLs(t *testing.T) {
	none := func(string) string { return "" }
	cfg, err := Parse([]string{"--engine", "redis", "--redis-url", "redis://a:1/0  redis://:pw@b/2\tredis://c:3/0"}, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cfg.RedisShardOptions()
	if err != nil || len(opts) != 3 {
		t.Fatalf("shards = %v, %v; want 3", opts, err)
	}
	if opts[0].Addrs[0] != "a:1" || opts[1].Addrs[0] != "b:6379" || opts[1].DB != 2 || opts[1].Password != "pw" || opts[2].Addrs[0] != "c:3" {
		t.Fatalf("shards parsed as %+v %+v %+v", opts[0], opts[1], opts[2])
	}
	if got := maskURLPassword(cfg.RedisURL); strings.Contains(got, "pw") || !strings.Contains(got, "redis://:********@b/2") {
		t.Fatalf("masked %q", got)
	}
	// The event webhook works over shards (a composite cursor).
	if _, err := Parse([]string{"--engine", "redis", "--redis-url", "redis://a/0 redis://b/0", "--event-webhook-url", "http://h/e",
		"--event-webhook-secret", "k3Jq9Zr0-event-hook-secret-0cf7a1d4e2b8"}, none, io.Discard); err != nil {
		t.Fatalf("webhook with two shards: %v", err)
	}
	one, err := Parse([]string{"--engine", "redis", "--redis-url", "redis://a:1/0"}, none, io.Discard)
	if err != nil || len(one.RedisShards()) != 1 {
		t.Fatalf("one URL: %v, %v", one.RedisShards(), err)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis-url", "redis://a:1/0 http://b/0"}, `--redis-url: shard 1: scheme must be redis or rediss, got "http"`},
		{[]string{"--redis-url", "redis://a:1/0 redis://b:1,c:2/0"}, "--redis-url: shard 1: several hosts need --redis-master-name"},
		{[]string{"--redis-url", " "}, "--redis-url: no URL"},
		{[]string{"--redis-url", strings.Repeat("redis://a/0 ", MaxRedisShards+1)}, "at most 64 shards"},
		{[]string{"--redis-url", "redis://a:1/0", "--redis-cluster-shards", "4"}, "--redis-cluster-shards needs --redis-cluster"},
		{[]string{"--redis-url", "redis://a:1,b:2/0", "--redis-cluster", "--redis-cluster-shards", "0"}, "--redis-cluster-shards must be 1 to 64"},
		{[]string{"--redis-url", "redis://a:1,b:2/0 redis://c:1,d:2/0", "--redis-cluster", "--redis-cluster-shards", "33"},
			"--redis-url URLs times --redis-cluster-shards: at most 64 shards"},
	} {
		_, err := Parse(append([]string{"--engine", "redis"}, bad.args...), none, io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: err = %v, want it to say %q", bad.args, err, bad.want)
		}
	}
}
