package config

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisShards returns the Redis deployments --redis-url names: one URL,
// or several separated by spaces (a sharded engine, docs/cluster.md).
func (c *Config) RedisShards() []string { return strings.Fields(c.RedisURL) }

// RedisShardOptions returns the go-redis options of each deployment
// --redis-url names (RedisShards), in order.
func (c *Config) RedisShardOptions() ([]*redis.UniversalOptions, error) {
	urls := c.RedisShards()
	if len(urls) == 0 {
		return nil, fmt.Errorf("no URL")
	}
	if len(urls) > MaxRedisShards {
		return nil, fmt.Errorf("%d URLs: at most %d shards", len(urls), MaxRedisShards)
	}
	out := make([]*redis.UniversalOptions, len(urls))
	for i, raw := range urls {
		o, err := c.redisOptions(raw)
		if err != nil {
			if len(urls) > 1 {
				return nil, fmt.Errorf("shard %d: %w", i, err)
			}
			return nil, err
		}
		out[i] = o
	}
	return out, nil
}

// MaxRedisShards bounds the deployments --redis-url may name.
const MaxRedisShards = 64

// RedisOptions turns --redis-url (and --redis-master-name, --redis-cluster)
// into go-redis options: one host is a plain Redis; several are sentinels
// (with a master name) or Cluster nodes. With several shards it returns
// the first's.
func (c *Config) RedisOptions() (*redis.UniversalOptions, error) {
	all, err := c.RedisShardOptions()
	if err != nil {
		return nil, err
	}
	return all[0], nil
}

func (c *Config) redisOptions(raw string) (*redis.UniversalOptions, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("scheme must be redis or rediss, got %q", u.Scheme)
	}
	hosts := strings.Split(u.Host, ",")
	first := *u
	first.Host = hosts[0]
	o, err := redis.ParseURL(first.String())
	if err != nil {
		return nil, err
	}
	addrs := make([]string, len(hosts))
	for i, h := range hosts {
		if h == "" {
			return nil, fmt.Errorf("empty host in %q", u.Host)
		}
		if !strings.Contains(h, ":") {
			h += ":6379"
		}
		addrs[i] = h
	}
	if len(addrs) > 1 && c.RedisMasterName == "" && !c.RedisCluster {
		return nil, fmt.Errorf("several hosts need --redis-master-name (Sentinel) or --redis-cluster")
	}
	return &redis.UniversalOptions{
		Addrs:         addrs,
		DB:            o.DB,
		Username:      o.Username,
		Password:      o.Password,
		TLSConfig:     o.TLSConfig,
		MasterName:    c.RedisMasterName,
		IsClusterMode: c.RedisCluster,
		ReadTimeout:   c.RedisTimeout,
		WriteTimeout:  c.RedisTimeout,
		DialTimeout:   c.RedisTimeout,
		PoolSize:      64,
		// A command is never sent twice: a script that ran but whose
		// answer was lost would send its message again. The call fails
		// (UNAVAILABLE) instead, and its idempotency key, recorded by the
		// script, makes the caller's retry safe.
		MaxRetries:   -1,
		MaxRedirects: -1, // Cluster: its own retries, likewise off
	}, nil
}

// maskURLPassword hides the password of a redis:// URL (of each, when
// several are separated by spaces), for printing.
func maskURLPassword(raw string) string {
	if urls := strings.Fields(raw); len(urls) > 1 {
		for i, u := range urls {
			urls[i] = maskOneURL(u)
		}
		return strings.Join(urls, " ")
	}
	return maskOneURL(raw)
}

func maskOneURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "********" // unparsable: it may hold anything
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
		return strings.Replace(u.String(), ":xxxxx@", ":********@", 1)
	}
	return raw
}
