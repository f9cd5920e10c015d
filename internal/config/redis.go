package config

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisOptions turns --redis-url (and --redis-master-name, --redis-cluster)
// into go-redis options: one host is a plain Redis; several are sentinels
// (with a master name) or Cluster nodes.
func (c *Config) RedisOptions() (*redis.UniversalOptions, error) {
	u, err := url.Parse(c.RedisURL)
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

// maskURLPassword hides the password of a redis:// URL, for printing.
func maskURLPassword(raw string) string {
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
