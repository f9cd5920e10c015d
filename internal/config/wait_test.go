package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

// --redis-wait-replicas and --redis-wait-timeout: defaults, and bad values
// refused with an error naming the flag.
func TestRedisWaitFlags(t *testing.T) {
	none := func(string) string { return "" }
	cfg, err := Parse([]string{"--engine", "redis"}, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RedisWaitReplicas != 0 || cfg.RedisWaitTimeout != time.Second {
		t.Fatalf("defaults: replicas %d, timeout %v; want 0, 1s", cfg.RedisWaitReplicas, cfg.RedisWaitTimeout)
	}
	cfg, err = Parse([]string{"--engine", "redis", "--redis-wait-replicas", "1", "--redis-wait-timeout", "300ms"}, none, io.Discard)
	if err != nil || cfg.RedisWaitReplicas != 1 || cfg.RedisWaitTimeout != 300*time.Millisecond {
		t.Fatalf("got %d %v, %v; want 1 300ms", cfg.RedisWaitReplicas, cfg.RedisWaitTimeout, err)
	}
	// Without waiting, the timeout is not used: a short --redis-timeout is fine.
	if _, err := Parse([]string{"--engine", "redis", "--redis-timeout", "500ms"}, none, io.Discard); err != nil {
		t.Fatalf("--redis-timeout 500ms without waiting: %v", err)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis-wait-replicas", "-1"}, "--redis-wait-replicas must not be negative"},
		{[]string{"--redis-wait-replicas", "1", "--redis-wait-timeout", "0s"}, "--redis-wait-timeout must be positive"},
		{[]string{"--redis-wait-replicas", "1", "--redis-wait-timeout", "2s"}, "below --redis-timeout (2s)"},
		{[]string{"--redis-wait-replicas", "1", "--redis-cluster", "--redis-url", "redis://a:1,b:2"}, "--redis-wait-replicas is not supported with --redis-cluster"},
	} {
		_, err := Parse(append([]string{"--engine", "redis"}, bad.args...), none, io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: err = %v, want it to say %q", bad.args, err, bad.want)
		}
	}
}
