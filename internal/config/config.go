// Package config is pushgate's configuration: the flags, their PUSHGATE_*
// environment variables and the YAML file (--config), their defaults and
// validation, and "pushgate config print".
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"pushgate/gateway"
	"pushgate/internal/eventsink"
	"pushgate/internal/notify"
	"pushgate/internal/secret"
	"pushgate/server"
)

// Config is everything pushgate can be told. Every field is a flag with a
// PUSHGATE_* environment variable (the flag name upper-cased, '-' → '_');
// a flag on the command line wins over the environment. Defaults are the
// flags' (Load); those of the gateway's settings come from
// gateway.DefaultConfig.
type Config struct {
	HTTPAddr string // WebSocket, demo page, metrics and health.
	GRPCAddr string // the backend API.
	Insecure bool   // allow non-loopback addresses without client auth.

	LogFormat string // text or json.
	LogLevel  string // debug, info, warn or error.

	HeartbeatInterval time.Duration // server ping period.
	HeartbeatTimeout  time.Duration // pong deadline.
	WriteTimeout      time.Duration // per write batch; slower peers are slow consumers.
	QueueMessages     int           // per-connection send queue cap, messages.
	QueueBytes        int           // per-connection send queue cap, bytes.
	ReadLimit         int           // largest client frame, bytes.
	AllowedOrigins    string        // comma-separated cross-origin host patterns.
	ReadHeaderTimeout time.Duration // HTTP request header deadline.
	ReadTimeout       time.Duration // whole HTTP request (headers and body) deadline.
	MaxHTTPConns      int           // open non-WebSocket connections per HTTP listener.

	MaxUserIDBytes  int // longest user id.
	MaxPayloadBytes int // largest message payload.
	MaxBatchUsers   int // most ids per SendToUsers/GetPresence/exclude list.

	ShutdownDelay     time.Duration // not-ready time before listeners close at shutdown.
	InboxMessages     int           // per-user inbox cap, messages.
	InboxBytes        int           // per-user inbox cap, bytes.
	InboxMaxTTL       time.Duration // longest message ttl.
	PresenceGrace     time.Duration // offline events wait this long.
	MaxTopicsPerConn  int           // subscriptions per connection.
	TopicHistory      string        // comma-separated pattern=messages/ttl rules: topics that keep history.
	TopicHistoryTotal int           // messages in all topic histories together (memory engine).
	UpstreamUsers     string        // comma-separated user id patterns allowed to send upstream.
	UpstreamTopics    string        // comma-separated topic patterns clients may send to.
	PublishTopics     string        // comma-separated topic patterns any client may publish to.
	DirectUsers       string        // comma-separated user id patterns any client may send a message to.
	PublishRate       float64       // client publishes per second per connection.
	PresenceEvents    string        // comma-separated topic patterns whose joins and leaves are events.
	PresenceTopics    string        // comma-separated topic patterns whose presence any client may read.
	IdempotencyWindow time.Duration // how long idempotency keys are remembered.
	WatchBuffer       int           // events a WatchEvents stream may lag.

	WatchMax           int           // WatchEvents streams per node.
	WatchMaxPerKey     int           // WatchEvents streams per API key per node.
	InboxTotalMessages int           // all inboxes together, messages (memory engine).
	InboxTotalBytes    int           // all inboxes together, payload bytes (memory engine).
	IdempotencyEntries int           // idempotency results remembered (memory engine).
	ReceiptRetention   time.Duration // message receipts are kept this long after the send (after the ttl for a stored message).
	ReceiptMax         int           // recipients whose receipts are kept, all messages together.
	EventLogMax        int           // events the event log keeps.
	EventLogRetention  time.Duration // how long the event log keeps an event.

	EventWebhookURL        string        // where the event sink posts ("" off).
	EventWebhookSecret     string        // signs the sink's posts.
	EventWebhookSecretFile string        // file holding EventWebhookSecret.
	EventWebhookKinds      string        // comma-separated kinds posted ("" all).
	EventWebhookQueue      int           // events waiting to be posted.
	EventWebhookTimeout    time.Duration // bounds one post.
	GRPCMaxStreams         int           // concurrent calls per gRPC connection.
	GRPCRequestTimeout     time.Duration // from a call's headers to its request; also the connection handshake.
	GRPCMaxConnsPerIP      int           // open gRPC connections per client address.
	GRPCResetRate          float64       // calls per second per gRPC connection that may end before their request.

	Auth            string        // client auth: none or jwt.
	JWTSecret       string        // HS256 secret.
	JWTPublicKey    string        // PEM public key file (RS256, ES256, EdDSA).
	JWTJWKS         string        // JWKS file (keys by kid, re-read on change).
	JWTAudience     string        // required aud.
	JWTIssuer       string        // required iss.
	JWTLeeway       time.Duration // clock skew allowed on exp/nbf/iat.
	JWTMaxLifetime  time.Duration // longest a token may be valid; 0: no maximum.
	TokenCookie     string        // cookie carrying the token.
	APIKeys         string        // name:key,... for gRPC callers.
	APIKeysFile     string        // file of name:key lines.
	GRPCRate        float64       // calls per second per API key.
	NoReflection    bool          // turn gRPC server reflection off.
	NoHTTPAPI       bool          // turn the HTTP/JSON API on the HTTP listener off.
	GRPCTLSCert     string        // PEM certificate for gRPC TLS.
	GRPCTLSKey      string        // its key.
	GRPCClientCA    string        // PEM CA bundle: require client certificates (mTLS).
	HTTPTLSCert     string        // PEM certificate for wss/https.
	HTTPTLSKey      string        // its key.
	MaxConns        int           // open connections per node.
	MaxConnsPerUser int           // open connections per user.
	NewConnsPerSec  float64       // new connections per second per node.
	UpstreamRate    float64       // frames per second per client connection.
	GRPCStopTimeout time.Duration // in-flight gRPC calls get this long at shutdown.
	ConfigFile      string        // YAML file of settings.
	OpsAddr         string        // separate listener for metrics, health, admin, pprof.
	AdminPassword   string        // admin page password (user "admin").
	Pprof           bool          // serve /debug/pprof on the ops listener.
	NodeName        string        // this node's name.
	TrustedProxies  string        // CIDRs whose X-Forwarded-For is believed.
	DrainWindow     time.Duration // client closes are spread over this at shutdown.

	OTLPEndpoint     string  // OpenTelemetry collector URL for traces ("": tracing off).
	OTLPProtocol     string  // grpc or http.
	TraceSampleRatio float64 // share of calls without a sampled parent that are traced.

	Engine            string        // memory or redis.
	RedisURL          string        // redis:// or rediss:// URL; several hosts comma-separated.
	RedisMasterName   string        // Sentinel master name (the URL's hosts are the sentinels).
	RedisCluster      bool          // the URL's hosts are a Redis Cluster.
	RedisClusterTags  int           // hash tags (virtual shards) each Cluster spreads pushgate's keys over; 1: one tag.
	RedisPrefix       string        // key and channel prefix (a Cluster hash tag).
	RedisTimeout      time.Duration // per Redis call.
	RedisWaitReplicas int           // a stored send waits for this many replicas (0: no waiting).
	RedisWaitTimeout  time.Duration // how long it waits.
	EngineTimeout     time.Duration // per engine call made for a connection (join, subscribe, ack, client message).
	NodeTTL           time.Duration // a node that stops beating leaves the cluster after this.

	// Offline notification (docs/offline-push.md).
	VAPIDPrivateKey     string        // base64url P-256 private key for Web Push ("" : Web Push off).
	VAPIDPrivateKeyFile string        // file holding VAPIDPrivateKey.
	VAPIDSubject        string        // mailto: or https: contact sent to push services.
	WeChatAppID         string        // mini-program app id ("" : WeChat off).
	WeChatAppSecret     string        // its app secret.
	WeChatAppSecretFile string        // file holding WeChatAppSecret.
	WeChatAPIURL        string        // base URL of the WeChat API.
	WeChatState         string        // miniprogram_state: formal, trial or developer.
	WebhookSecret       string        // HMAC secret of escalation webhooks ("" : webhooks off).
	WebhookSecretFile   string        // file holding WebhookSecret.
	NotifyWebhookHosts  string        // comma-separated hosts webhook targets may name ("" : any).
	NotifyAllowPrivate  bool          // Web Push endpoints may be on private/loopback addresses.
	NotifyMaxTargets    int           // push targets per user.
	NotifyMaxPending    int           // escalations waiting, cluster-wide.
	NotifyWorkers       int           // concurrent notification sends per node.
	NotifyQueue         int           // notification sends waiting per node.
	NotifyPoll          time.Duration // how often a node claims due escalations.
}

// Parse reads the configuration: flags from args, over PUSHGATE_*
// variables read through getenv, over the YAML file named by --config (or
// PUSHGATE_CONFIG), over the defaults. It returns flag.ErrHelp after
// writing the usage to out for -h/--help.
func Parse(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	c, _, err := Load(args, getenv, out)
	return c, err
}

// HistoryRules parses --topic-history.
func (c *Config) HistoryRules() ([]gateway.TopicHistoryRule, error) {
	var out []gateway.TopicHistoryRule
	for _, s := range List(c.TopicHistory) {
		r, err := gateway.ParseTopicHistoryRule(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// MinAdminPassword is the shortest --admin-password accepted, in
// characters.
const MinAdminPassword = 12

// secretFlags are masked by "pushgate config print".
var secretFlags = map[string]bool{"jwt-secret": true, "api-keys": true, "admin-password": true,
	"vapid-private-key": true, "wechat-app-secret": true, "notify-webhook-secret": true, "event-webhook-secret": true}

// Load is Parse that also returns the flag set, holding the effective value
// of every option (for Print).
func Load(args []string, getenv func(string) string, out io.Writer) (Config, *flag.FlagSet, error) {
	var c Config
	gw := gateway.DefaultConfig() // the gateway's defaults, stated once there
	fs := flag.NewFlagSet("pushgate", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "`address` for WebSocket clients (/ws), the demo page, /metrics, /healthz and /readyz")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:9090", "`address` for the gRPC API (backends)")
	fs.BoolVar(&c.Insecure, "insecure", false, "allow listening on non-loopback addresses with no client authentication")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", gw.HeartbeatInterval, "how often the server pings each WebSocket connection")
	fs.DurationVar(&c.HeartbeatTimeout, "heartbeat-timeout", gw.HeartbeatTimeout, "how long a ping may go unanswered before the connection is closed")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", gw.WriteTimeout, "deadline for writing queued messages to a connection; slower clients are closed as slow consumers (4000)")
	fs.IntVar(&c.QueueMessages, "queue-max-messages", gw.QueueMessages, "per-connection send queue limit, in messages; overflow closes the connection as a slow consumer (4000)")
	fs.IntVar(&c.QueueBytes, "queue-max-bytes", gw.QueueBytes, "per-connection send queue limit, in bytes; overflow closes the connection as a slow consumer (4000)")
	fs.IntVar(&c.ReadLimit, "read-limit", int(gw.ReadLimit), "largest frame accepted from a client, in bytes; larger closes with 1009")
	fs.StringVar(&c.AllowedOrigins, "allowed-origins", "", "comma-separated `patterns` of cross-origin hosts allowed to open WebSockets, e.g. admin.example.com,*.example.com (same-origin is always allowed)")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", 5*time.Second, "deadline for reading an HTTP request's headers")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", 10*time.Second, "deadline for reading a whole HTTP request, headers and body; a slower request is answered (its handler sees the body end early) and its connection closed")
	fs.IntVar(&c.MaxHTTPConns, "max-http-connections", 10000, "most open connections on each HTTP listener (--http-addr, --ops-addr) that are not WebSockets: requests being read or answered, and idle keep-alive connections; past it new connections are closed at once; 0 for no limit")
	fs.IntVar(&c.MaxUserIDBytes, "max-user-id-bytes", gw.MaxUserIDBytes, "longest user id accepted, in bytes")
	fs.IntVar(&c.MaxPayloadBytes, "max-payload-bytes", 64<<10, "largest message payload accepted from a backend, in bytes")
	fs.IntVar(&c.MaxBatchUsers, "max-batch-users", 10000, "most user ids in one SendToUsers, GetPresence or Broadcast exclude list, and connection ids in one exclude_connection_ids")
	fs.IntVar(&c.InboxMessages, "inbox-max-messages", gw.InboxMessages, "per-user inbox limit, in messages (messages sent with a ttl wait there); the oldest are dropped past it")
	fs.IntVar(&c.InboxBytes, "inbox-max-bytes", gw.InboxBytes, "per-user inbox limit, in payload bytes; the oldest are dropped past it")
	fs.DurationVar(&c.InboxMaxTTL, "inbox-max-ttl", gw.InboxMaxTTL, "longest ttl a message may ask for (also how long a dropped message is remembered, so resuming clients learn of the gap)")
	fs.DurationVar(&c.PresenceGrace, "presence-grace", gw.PresenceGrace, "how long a user may be gone before WatchEvents reports them offline (a page reload reports nothing); 0 reports at once")
	fs.IntVar(&c.MaxTopicsPerConn, "max-topics-per-connection", gw.MaxTopicsPerConn, "most topics one connection may subscribe to")
	fs.StringVar(&c.TopicHistory, "topic-history", "", "comma-separated `rules` pattern=messages/ttl: topics matching pattern (exact, or prefix*) keep their last messages, each for ttl (or a Publish's shorter ttl), and clients resume them after a reconnect, e.g. todo:*=100/10m; the first matching rule applies; messages at most "+strconv.Itoa(gateway.MaxTopicHistoryMessages)+", ttl 1s to --inbox-max-ttl and at most 24h; empty: every topic is live only")
	fs.IntVar(&c.TopicHistoryTotal, "topic-history-max-total", gw.TopicHistoryTotal, "memory engine: messages in all topic histories together, and topics with a record of their last id; past it messages are delivered live but not kept (resuming clients get recovered: false)")
	fs.StringVar(&c.UpstreamUsers, "upstream-users", "", "comma-separated user id `patterns` whose clients may send messages to WatchEvents: * matches any characters (/ included; * alone is everyone), ? one, [a-z] one of a class, \\ escapes")
	fs.StringVar(&c.UpstreamTopics, "upstream-topics", "", "comma-separated topic `patterns` (exact, or prefix*) that clients may send messages to")
	fs.StringVar(&c.PublishTopics, "client-publish-topics", "", "comma-separated topic `patterns` (exact, or prefix*) that every envelope client may publish to, besides what its token's pub claim allows")
	fs.StringVar(&c.DirectUsers, "client-direct-users", "", "comma-separated user id `patterns` that every envelope client may send a message to (op direct), besides what its token's dm claim allows; same syntax as --upstream-users")
	fs.StringVar(&c.PresenceEvents, "topic-presence-events", "", "comma-separated topic `patterns` (exact, or prefix*) whose joins and leaves (a user's first subscription in the deployment, its last) are events (WatchEvents, the event log and webhook); empty: none")
	fs.StringVar(&c.PresenceTopics, "client-presence-topics", "", "comma-separated topic `patterns` (exact, or prefix*) whose presence (who is subscribed) every envelope client may read, besides what its token's presence claim allows")
	fs.Float64Var(&c.PublishRate, "client-publish-rate", gw.ClientPublishPerSecond, "publish, direct and presence ops per second one client connection may make, bursts of twice that (closed with 4002 past it)")
	fs.DurationVar(&c.IdempotencyWindow, "idempotency-window", 5*time.Minute, "how long a call with an idempotency_key is remembered (repeats get the first response)")
	fs.IntVar(&c.WatchBuffer, "watch-buffer", server.DefaultWatchBuffer, "events a WatchEvents stream may fall behind before it is ended with RESOURCE_EXHAUSTED")
	fs.IntVar(&c.WatchMax, "watch-max", server.DefaultMaxWatchers, "most WatchEvents streams open on this node (RESOURCE_EXHAUSTED past it)")
	fs.IntVar(&c.WatchMaxPerKey, "watch-max-per-key", server.DefaultMaxWatchersPerKey, "most WatchEvents streams of one API key on this node, all callers together without keys (RESOURCE_EXHAUSTED past it)")
	fs.IntVar(&c.InboxTotalMessages, "inbox-max-total-messages", gw.InboxTotalMessages, "memory engine: messages in all inboxes together; past it messages are delivered live but not stored (stored: false)")
	fs.IntVar(&c.InboxTotalBytes, "inbox-max-total-bytes", gw.InboxTotalBytes, "memory engine: payload bytes in all inboxes together (a message counts in each inbox it is in); past it messages are delivered live but not stored (stored: false)")
	fs.IntVar(&c.IdempotencyEntries, "idempotency-max-entries", gw.IdempotencyEntries, "memory engine: idempotency results remembered (a SendToUsers result counts once per user); past it a send with a new key gets RESOURCE_EXHAUSTED")
	fs.DurationVar(&c.ReceiptRetention, "receipt-retention", gw.ReceiptRetention, "how long GetMessageStatus can report a message sent to users: its receipt is kept this long after the send, and a stored message's this long after its ttl ends")
	fs.IntVar(&c.ReceiptMax, "receipt-max", gw.ReceiptMax, "recipients whose message receipts are kept, all messages together (a SendToUsers to n users counts n); past it the oldest receipts are evicted")
	fs.IntVar(&c.EventLogMax, "event-log-max", gw.EventLogMax, "events the event log keeps for WatchEvents resumes (after_cursor), the oldest dropped first; with the Redis engine approximate from 10000 up (whole stream nodes are trimmed)")
	fs.DurationVar(&c.EventLogRetention, "event-log-retention", gw.EventLogRetention, "how long the event log keeps an event (and the newest older one, so a consumer that saw it before a quiet spell can resume); a cursor older than the log gets OUT_OF_RANGE")
	fs.StringVar(&c.EventWebhookURL, "event-webhook-url", "", "`URL` the events of the event log are POSTed to, signed, in order, retried until acknowledged (docs/events.md); empty: no webhook")
	fs.StringVar(&c.EventWebhookSecret, "event-webhook-secret", "", "`secret` (at least 32 bytes) that signs each event webhook POST (header Pushgate-Signature); required with --event-webhook-url")
	fs.StringVar(&c.EventWebhookSecretFile, "event-webhook-secret-file", "", "`file` holding --event-webhook-secret (trailing line breaks removed)")
	fs.StringVar(&c.EventWebhookKinds, "event-webhook-kinds", "", "comma-separated event `kinds` posted to --event-webhook-url (user_online, user_offline, message_acked, client_message, message_escalated, topic_join, topic_leave); empty: all")
	fs.IntVar(&c.EventWebhookQueue, "event-webhook-queue", eventsink.DefaultQueue, "events waiting to be posted to --event-webhook-url; past it new events are dropped (counted, and the next delivery says so)")
	fs.DurationVar(&c.EventWebhookTimeout, "event-webhook-timeout", eventsink.DefaultTimeout, "how long one event webhook POST may take before it is retried")
	fs.IntVar(&c.GRPCMaxStreams, "grpc-max-streams", server.DefaultMaxStreams, "concurrent calls (HTTP/2 streams) per gRPC connection; clients that ignore it get REFUSED_STREAM")
	fs.DurationVar(&c.GRPCRequestTimeout, "grpc-request-timeout", server.DefaultRequestTimeout, "how long a gRPC call may take to send its request after its headers (it then ends with CANCELLED), and a new connection its TLS and HTTP/2 handshake")
	fs.IntVar(&c.GRPCMaxConnsPerIP, "grpc-max-connections-per-address", server.DefaultMaxConnsPerAddr, "open gRPC connections per client IP address (more are closed on accept); 0 for no limit")
	fs.Float64Var(&c.GRPCResetRate, "grpc-reset-rate", server.DefaultResetRate, "gRPC calls per second per connection that may end before their request arrives (reset by the client), bursts of twice that; past it the connection is closed; 0 for no limit")
	fs.StringVar(&c.Auth, "auth", "none", "client authentication: none (development identity from the URL) or jwt (user id from a token's sub)")
	fs.StringVar(&c.JWTSecret, "jwt-secret", "", "HS256 `secret` that signs client tokens (at least 32 bytes)")
	fs.StringVar(&c.JWTPublicKey, "jwt-public-key", "", "PEM public key `file` that verifies client tokens: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA)")
	fs.StringVar(&c.JWTJWKS, "jwt-jwks", "", "JWKS `file` of keys by kid; re-read when it changes, so keys can rotate")
	fs.StringVar(&c.JWTAudience, "jwt-audience", "", "when set, tokens must carry this aud")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", "", "when set, tokens must carry this iss")
	fs.DurationVar(&c.JWTLeeway, "jwt-leeway", 5*time.Second, "clock skew allowed when checking a token's exp, nbf and iat")
	fs.DurationVar(&c.JWTMaxLifetime, "jwt-max-lifetime", 24*time.Hour, "longest a client token may be valid: tokens whose exp is further from now, or from their iat, are refused; 0 for no maximum")
	fs.StringVar(&c.TokenCookie, "token-cookie", "", "`name` of a cookie that may carry the client token (besides the Authorization header and the token query parameter)")
	fs.StringVar(&c.APIKeys, "api-keys", "", "comma-separated `name:key` pairs; gRPC callers must send \"authorization: Bearer <key>\"")
	fs.StringVar(&c.APIKeysFile, "api-keys-file", "", "`file` of name:key lines (# comments), added to --api-keys")
	fs.Float64Var(&c.GRPCRate, "grpc-rate", 10000, "PushService calls per second allowed per API key (RESOURCE_EXHAUSTED past it); 0 for no limit")
	fs.BoolVar(&c.NoReflection, "no-reflection", false, "turn gRPC server reflection off")
	fs.BoolVar(&c.NoHTTPAPI, "no-http-api", false, "turn the HTTP/JSON API (POST /pushgate.v1.PushService/<Method> on --http-addr) off")
	fs.StringVar(&c.GRPCTLSCert, "grpc-tls-cert", "", "PEM certificate `file`: serve gRPC over TLS")
	fs.StringVar(&c.GRPCTLSKey, "grpc-tls-key", "", "PEM key `file` for --grpc-tls-cert")
	fs.StringVar(&c.GRPCClientCA, "grpc-client-ca", "", "PEM CA `file`: gRPC callers must present a certificate it signed (mTLS)")
	fs.StringVar(&c.HTTPTLSCert, "http-tls-cert", "", "PEM certificate `file`: serve the HTTP side over TLS (wss://, https://)")
	fs.StringVar(&c.HTTPTLSKey, "http-tls-key", "", "PEM key `file` for --http-tls-cert")
	fs.IntVar(&c.MaxConns, "max-connections", 100000, "most open WebSocket connections on this node (HTTP 503 past it)")
	fs.IntVar(&c.MaxConnsPerUser, "max-connections-per-user", 32, "most open connections of one user (HTTP 429 past it)")
	fs.Float64Var(&c.NewConnsPerSec, "max-new-connections", 5000, "new WebSocket connections per second on this node (HTTP 429 past it); 0 for no limit")
	fs.Float64Var(&c.UpstreamRate, "upstream-rate", 20, "frames per second a client may send, WebSocket pings and pongs included, bursts of twice that, and message ids it may acknowledge per second, bursts of a full inbox plus twice that (closed with 4002 past either); 0 for no limit")
	fs.DurationVar(&c.GRPCStopTimeout, "grpc-stop-timeout", 10*time.Second, "at shutdown, how long in-flight gRPC calls may take before they are cut")
	fs.DurationVar(&c.DrainWindow, "drain-window", 10*time.Second, "at shutdown, clients are closed with 1001 at a steady pace over this window, so they do not all reconnect at once (0: all at once)")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 0, "at shutdown, how long /readyz and gRPC health report not ready before new connections are refused (give load balancers time to notice)")

	host, _ := os.Hostname()
	fs.StringVar(&c.OpsAddr, "ops-addr", "", "separate `address` for /metrics, /healthz, /readyz, /admin and /debug/pprof (default: served on --http-addr)")
	fs.StringVar(&c.AdminPassword, "admin-password", "", fmt.Sprintf("password for the /admin page (user \"admin\"), at least %d characters; API keys are accepted too. Without either, /admin is served only on a loopback listener. An address that fails 10 logins waits 6s per further try (HTTP 429)", MinAdminPassword))
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go profiling at /debug/pprof (with the ops endpoints)")
	fs.StringVar(&c.NodeName, "node-name", host, "this node's name: in every log line (node=) and on the admin page")
	fs.StringVar(&c.OTLPEndpoint, "otlp-endpoint", "", "OpenTelemetry collector `URL` to export traces to (http://collector:4317 for --otlp-protocol grpc, http://collector:4318 for http; https:// for TLS); empty: tracing off")
	fs.StringVar(&c.OTLPProtocol, "otlp-protocol", "grpc", "OTLP protocol of --otlp-endpoint: grpc or http (protobuf over HTTP)")
	fs.Float64Var(&c.TraceSampleRatio, "trace-sample-ratio", 1, "share (0 to 1) of API calls traced when the caller sent no traceparent; a caller's traceparent decides for its own calls")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", "", "comma-separated `CIDRs` of proxies (e.g. 127.0.0.1/32 for a local nginx) whose X-Forwarded-For names the client address in logs")
	fs.StringVar(&c.Engine, "engine", "memory", "where presence, inboxes and fan-out live: memory (this node only, nothing to install) or redis (several nodes share them through --redis-url)")
	fs.StringVar(&c.RedisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis `URL` for --engine redis: redis:// or rediss:// (TLS), with user:password@ and /db; several hosts comma-separated (redis://h1:6379,h2:6379) for Sentinel or Cluster; several URLs separated by spaces are independent shards that users and topics are spread over")
	fs.StringVar(&c.RedisMasterName, "redis-master-name", "", "Sentinel master `name`: the --redis-url hosts are sentinels")
	fs.BoolVar(&c.RedisCluster, "redis-cluster", false, "the --redis-url hosts are a Redis Cluster (pushgate's keys share one hash slot, unless --redis-cluster-shards spreads them)")
	fs.IntVar(&c.RedisClusterTags, "redis-cluster-shards", 1, "with --redis-cluster: spread users and topics over this many hash tags (virtual shards) of each Cluster, so that its masters share the work, with sharded pub/sub (Redis 7 or later); 1: every key in one slot")
	fs.StringVar(&c.RedisPrefix, "redis-prefix", "pushgate", "prefix of pushgate's Redis keys and channels (nodes of one cluster use the same)")
	fs.DurationVar(&c.RedisTimeout, "redis-timeout", 2*time.Second, "deadline for one Redis call; calls that cannot reach Redis answer UNAVAILABLE")
	fs.IntVar(&c.RedisWaitReplicas, "redis-wait-replicas", 0, "a send with a ttl answers OK only once this many Redis replicas have it (WAIT), so that it survives a failover; UNAVAILABLE when they do not confirm within --redis-wait-timeout (retry with the same idempotency key); 0: no waiting")
	fs.DurationVar(&c.RedisWaitTimeout, "redis-wait-timeout", time.Second, "how long a send with a ttl waits for --redis-wait-replicas replicas; below --redis-timeout")
	fs.DurationVar(&c.EngineTimeout, "engine-timeout", gw.EngineTimeout, "deadline for the engine's part of a connection's join, subscribe, ack or client message; past it the client gets 503 or an unavailable error")
	fs.DurationVar(&c.NodeTTL, "node-ttl", 15*time.Second, "with --engine redis: a node that stops (kill -9, network cut) leaves the online list after this, plus up to a third of it")
	fs.StringVar(&c.VAPIDPrivateKey, "vapid-private-key", "", "VAPID private `key` (base64url, from \"pushgate vapid\") that signs Web Push requests; empty: no Web Push")
	fs.StringVar(&c.VAPIDPrivateKeyFile, "vapid-private-key-file", "", "`file` holding --vapid-private-key (trailing line breaks removed)")
	fs.StringVar(&c.VAPIDSubject, "vapid-subject", "", "mailto: or https: `contact` sent to push services with --vapid-private-key (required with it)")
	fs.StringVar(&c.WeChatAppID, "wechat-app-id", "", "WeChat mini-program app `id` for subscribe messages; empty: no WeChat")
	fs.StringVar(&c.WeChatAppSecret, "wechat-app-secret", "", "the mini-program's app `secret` (required with --wechat-app-id)")
	fs.StringVar(&c.WeChatAppSecretFile, "wechat-app-secret-file", "", "`file` holding --wechat-app-secret (trailing line breaks removed)")
	fs.StringVar(&c.WeChatAPIURL, "wechat-api-url", notify.WeChatAPI, "base `URL` of the WeChat API (a proxy or a test emulator)")
	fs.StringVar(&c.WeChatState, "wechat-state", "formal", "miniprogram_state of subscribe messages: formal, trial or developer")
	fs.StringVar(&c.WebhookSecret, "notify-webhook-secret", "", "HMAC `secret` (at least 32 bytes) that signs escalation webhooks (Pushgate-Signature); empty: no webhook targets are notified")
	fs.StringVar(&c.NotifyWebhookHosts, "notify-webhook-hosts", "", "comma-separated `hosts` webhook push targets may name (*.example.com: its subdomains); empty: any host")
	fs.BoolVar(&c.NotifyAllowPrivate, "notify-allow-private", false, "let Web Push endpoints be on loopback, private or link-local addresses (refused otherwise: clients choose them)")
	fs.StringVar(&c.WebhookSecretFile, "notify-webhook-secret-file", "", "`file` holding --notify-webhook-secret (trailing line breaks removed)")
	fs.IntVar(&c.NotifyMaxTargets, "notify-max-targets", notify.DefaultMaxTargets, "most push targets (Web Push subscriptions, WeChat openids, webhooks) one user may have")
	fs.IntVar(&c.NotifyMaxPending, "notify-max-pending", notify.DefaultMaxPending, "most escalations waiting for their after, all nodes together; past it a message's escalation is not scheduled (reported on WatchEvents)")
	fs.IntVar(&c.NotifyWorkers, "notify-workers", notify.DefaultWorkers, "notifications sent at once by this node (Web Push, WeChat and webhook requests in flight)")
	fs.IntVar(&c.NotifyQueue, "notify-queue", notify.DefaultQueue, "notifications waiting for a worker on this node; past it they are dropped (counted, reported on WatchEvents)")
	fs.DurationVar(&c.NotifyPoll, "notify-poll", time.Second, "how often each node claims escalations that are due (an escalation fires up to this late)")
	fs.StringVar(&c.ConfigFile, "config", "", "YAML `file` of settings, keys named like the flags (http-addr: ...); flags and environment variables override it")

	o := track(fs)
	fs.Usage = func() { Usage(fs.Output(), fs) }

	// The file first, then the environment, then the command line, each
	// overriding what came before.
	file := getenv("PUSHGATE_CONFIG")
	for i, a := range args {
		if v, ok := strings.CutPrefix(strings.TrimLeft(a, "-"), "config="); ok && strings.HasPrefix(a, "-") {
			file = v
		} else if (a == "--config" || a == "-config") && i+1 < len(args) {
			file = args[i+1]
		}
	}
	if file != "" {
		o.current = "--config " + file
		err := ApplyFile(fs, file)
		o.current = ""
		if err != nil {
			return c, fs, err
		}
	}
	if err := applyEnv(fs, o, getenv); err != nil {
		return c, fs, err
	}
	if err := ParseArgs(fs, args); err != nil {
		return c, fs, err
	}
	if errs := c.readSecretFiles(); len(errs) > 0 {
		return c, fs, errors.Join(errs...)
	}
	return c, fs, errors.Join(annotate(c.validate(), o)...)
}

// Usage writes pushgate --help for the flag set of Load.
func Usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `Usage: pushgate [flags]              run pushgate
       pushgate version              print the version, commit, build date and Go version
       pushgate token --user ID      mint a client token (pushgate token --help)
       pushgate config print [flags] print the effective settings as YAML (pushgate config --help)
       pushgate vapid                print a new VAPID key pair for Web Push

pushgate pushes messages from backends (gRPC) to WebSocket clients.
Every flag can also be set with the environment variable shown, or in the
YAML file named by --config; the command line wins over the environment,
and the environment over the file. Durations are written 500ms, 25s, 1m.

`)
	PrintFlags(w, fs, Sections, EnvName)
}

// ApplyFile sets flags from a YAML mapping of flag names to values. A key
// that is not a flag is an error naming it, and so is a key given twice; a
// list becomes a comma list. Values are taken as written, never through a
// YAML type: 0777, 0123456789 and 2026-01-02 stay those characters (YAML
// would make them 511, 123456789 written as a float, and a timestamp),
// which matters for secrets. Quoted values are unquoted; null or ~ (or
// nothing) leaves the flag at its default.
func ApplyFile(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty, or only comments
	}
	root := resolveAlias(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("--config %s: want a mapping of flag names to values (http-addr: ...)", path)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		kn, vn := resolveAlias(root.Content[i]), resolveAlias(root.Content[i+1])
		k := kn.Value
		if kn.Kind != yaml.ScalarNode {
			return fmt.Errorf("--config %s: line %d: keys are flag names", path, kn.Line)
		}
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("--config %s: unknown key %q (keys are the flag names, see --help)", path, k)
		}
		if seen[k] {
			return fmt.Errorf("--config %s: key %q appears twice", path, k)
		}
		seen[k] = true
		var v string
		switch vn.Kind {
		case yaml.ScalarNode:
			if vn.Tag == "!!null" {
				continue
			}
			v = vn.Value
		case yaml.SequenceNode:
			parts := make([]string, len(vn.Content))
			for j, item := range vn.Content {
				item = resolveAlias(item)
				if item.Kind != yaml.ScalarNode {
					return fmt.Errorf("--config %s: key %q: a list of plain values, not of lists or mappings", path, k)
				}
				parts[j] = item.Value
			}
			v = strings.Join(parts, ",")
		default:
			return fmt.Errorf("--config %s: key %q: want a value or a list, not a mapping", path, k)
		}
		if err := fs.Set(k, v); err != nil {
			if secretFlags[k] {
				return fmt.Errorf("--config %s: line %d: key %q: %v", path, vn.Line, k, err)
			}
			return fmt.Errorf("--config %s: line %d: key %q: %q: %v", path, vn.Line, k, v, err)
		}
	}
	return nil
}

// resolveAlias follows a YAML alias (*name) to the node it names.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// Print writes the effective configuration of fs (from Load) as YAML
// (loadable with --config), secrets masked: "pushgate config print".
// Numbers and booleans are written as such, everything else as strings.
func Print(fs *flag.FlagSet, w io.Writer) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" || err != nil {
			return
		}
		if v := yamlScalar(f); v != "" {
			_, err = fmt.Fprintf(w, "%s: %s\n", f.Name, v)
			return
		}
		v := f.Value.String()
		switch {
		case f.Name == "redis-url":
			v = maskURLPassword(v)
		case secretFlags[f.Name] && fromFile(fs, f.Name):
			v = "" // read from --X-file, printed below
		case secretFlags[f.Name] && v != "":
			v = "********"
		}
		q, _ := yaml.Marshal(v)
		_, err = fmt.Fprintf(w, "%s: %s", f.Name, q)
	})
	return err
}

// EnvName is the environment variable of a flag: PUSHGATE_ and the name
// upper-cased, '-' → '_'.
func EnvName(flagName string) string {
	return "PUSHGATE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Validate checks the values and how they go together; Parse calls it.
func (c *Config) Validate() error {
	return errors.Join(c.validate()...)
}

func (c *Config) validate() []error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.LogFormat == "text" || c.LogFormat == "json", "--log-format must be text or json, got %q", c.LogFormat)
	var lvl slog.Level
	check(lvl.UnmarshalText([]byte(c.LogLevel)) == nil, "--log-level must be debug, info, warn or error, got %q", c.LogLevel)
	check(c.HeartbeatInterval > 0, "--heartbeat-interval must be positive")
	check(c.OTLPProtocol == "grpc" || c.OTLPProtocol == "http", "--otlp-protocol must be grpc or http, got %q", c.OTLPProtocol)
	check(c.TraceSampleRatio >= 0 && c.TraceSampleRatio <= 1, "--trace-sample-ratio must be between 0 and 1, got %v", c.TraceSampleRatio)
	if c.OTLPEndpoint != "" {
		u, err := url.Parse(c.OTLPEndpoint)
		check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "",
			"--otlp-endpoint must be an http:// or https:// URL such as http://collector:4317, got %q", c.OTLPEndpoint)
	}
	check(c.HeartbeatTimeout > 0, "--heartbeat-timeout must be positive")
	check(c.WriteTimeout > 0, "--write-timeout must be positive")
	check(c.EngineTimeout > 0, "--engine-timeout must be positive")
	check(c.QueueMessages > 0, "--queue-max-messages must be positive")
	check(c.QueueBytes > 0, "--queue-max-bytes must be positive")
	check(c.ReadLimit > 0, "--read-limit must be positive")
	check(c.MaxUserIDBytes > 0, "--max-user-id-bytes must be positive")
	check(c.MaxPayloadBytes > 0, "--max-payload-bytes must be positive")
	check(c.MaxBatchUsers > 0, "--max-batch-users must be positive")
	check(c.GRPCStopTimeout >= 0, "--grpc-stop-timeout must not be negative")
	check(c.InboxMessages > 0, "--inbox-max-messages must be positive")
	check(c.InboxBytes > 0, "--inbox-max-bytes must be positive")
	check(c.InboxMaxTTL > 0, "--inbox-max-ttl must be positive")
	check(c.MaxTopicsPerConn > 0, "--max-topics-per-connection must be positive")
	if rules, err := c.HistoryRules(); err != nil {
		check(false, "--topic-history: %v", err)
	} else {
		for _, r := range rules {
			check(r.TTL <= c.InboxMaxTTL, "--topic-history: %s: ttl %v is longer than --inbox-max-ttl (%v), how long a loss is remembered", r, r.TTL, c.InboxMaxTTL)
		}
	}
	check(c.TopicHistoryTotal > 0, "--topic-history-max-total must be positive")
	check(c.IdempotencyWindow > 0, "--idempotency-window must be positive")
	_, err := c.Proxies()
	check(err == nil, "--trusted-proxies: %v", err)
	for _, p := range List(c.UpstreamUsers) {
		err := gateway.ValidUserPattern(p)
		check(err == nil, "--upstream-users: pattern %q: %v", p, err)
	}
	for _, p := range List(c.DirectUsers) {
		err := gateway.ValidUserPattern(p)
		check(err == nil, "--client-direct-users: pattern %q: %v", p, err)
	}
	for _, p := range List(c.PublishTopics) {
		err := gateway.ValidTopic(strings.TrimSuffix(p, "*"))
		check(err == nil || p == "*", "--client-publish-topics: pattern %q: %v", p, err)
	}
	for _, f := range []struct{ name, v string }{{"topic-presence-events", c.PresenceEvents}, {"client-presence-topics", c.PresenceTopics}} {
		for _, p := range List(f.v) {
			err := gateway.ValidTopic(strings.TrimSuffix(p, "*"))
			check(err == nil || p == "*", "--%s: pattern %q: %v", f.name, p, err)
		}
	}
	check(c.PublishRate > 0, "--client-publish-rate must be positive")
	check(c.PresenceGrace >= 0, "--presence-grace must not be negative")
	check(c.WatchBuffer > 0, "--watch-buffer must be positive")
	check(c.WatchMax > 0 && c.WatchMaxPerKey > 0, "--watch-max and --watch-max-per-key must be positive")
	check(c.InboxTotalMessages > 0 && c.InboxTotalBytes > 0, "--inbox-max-total-messages and --inbox-max-total-bytes must be positive")
	check(c.IdempotencyEntries > 0, "--idempotency-max-entries must be positive")
	check(c.ReceiptRetention >= time.Second, "--receipt-retention must be at least 1s")
	check(c.ReceiptMax > 0, "--receipt-max must be positive")
	check(c.EventLogMax > 0 && c.EventLogRetention > 0, "--event-log-max and --event-log-retention must be positive")
	if c.EventWebhookURL != "" {
		u, err := url.Parse(c.EventWebhookURL)
		check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "", "--event-webhook-url must be an http:// or https:// URL, got %q", c.EventWebhookURL)
		check(len(c.EventWebhookSecret) >= 32, "--%s must be set, at least 32 bytes, with --event-webhook-url", c.secretName("event-webhook-secret"))
		_, err = c.WebhookKinds()
		check(err == nil, "--event-webhook-kinds: %v", err)
		check(c.EventWebhookQueue > 0 && c.EventWebhookTimeout > 0, "--event-webhook-queue and --event-webhook-timeout must be positive")
	}
	check(c.GRPCMaxStreams > 0 && int64(c.GRPCMaxStreams) <= math.MaxUint32, "--grpc-max-streams must be between 1 and %d", uint32(math.MaxUint32))
	check(c.GRPCRequestTimeout > 0, "--grpc-request-timeout must be positive")
	check(c.GRPCMaxConnsPerIP >= 0 && c.GRPCResetRate >= 0, "--grpc-max-connections-per-address and --grpc-reset-rate must not be negative")
	check(c.Auth == "none" || c.Auth == "jwt", "--auth must be none or jwt, got %q", c.Auth)
	hasKey := c.JWTSecret != "" || c.JWTPublicKey != "" || c.JWTJWKS != ""
	check(c.Auth != "jwt" || hasKey, "--auth jwt needs --jwt-secret, --jwt-public-key or --jwt-jwks")
	check(c.JWTSecret == "" || len(c.JWTSecret) >= 32, "--jwt-secret must be at least 32 bytes")
	errs = append(errs, weakSecrets(map[string]string{"jwt-secret": c.JWTSecret, "admin-password": c.AdminPassword,
		c.secretName("wechat-app-secret"): c.WeChatAppSecret, c.secretName("notify-webhook-secret"): c.WebhookSecret,
		c.secretName("event-webhook-secret"): c.EventWebhookSecret})...)
	check(c.VAPIDPrivateKey == "" || c.VAPIDSubject != "", "--vapid-private-key needs --vapid-subject (mailto:you@example.com or an https URL)")
	check(c.WeChatAppID == "" || c.WeChatAppSecret != "", "--wechat-app-id needs --wechat-app-secret")
	check(c.WebhookSecret == "" || len(c.WebhookSecret) >= 32, "--%s must be at least 32 bytes", c.secretName("notify-webhook-secret"))
	check(c.WeChatState == "formal" || c.WeChatState == "trial" || c.WeChatState == "developer", "--wechat-state must be formal, trial or developer")
	check(c.NotifyMaxTargets > 0 && c.NotifyMaxPending > 0 && c.NotifyWorkers > 0 && c.NotifyQueue > 0 && c.NotifyPoll > 0,
		"--notify-max-targets, --notify-max-pending, --notify-workers, --notify-queue and --notify-poll must be positive")
	check(c.AdminPassword == "" || utf8.RuneCountInString(c.AdminPassword) >= MinAdminPassword,
		"--admin-password must be at least %d characters", MinAdminPassword)
	check(c.JWTLeeway >= 0, "--jwt-leeway must not be negative")
	check(c.JWTMaxLifetime >= 0, "--jwt-max-lifetime must not be negative")
	check((c.GRPCTLSCert == "") == (c.GRPCTLSKey == ""), "--grpc-tls-cert and --grpc-tls-key go together")
	check(c.GRPCClientCA == "" || c.GRPCTLSCert != "", "--grpc-client-ca needs --grpc-tls-cert and --grpc-tls-key")
	check((c.HTTPTLSCert == "") == (c.HTTPTLSKey == ""), "--http-tls-cert and --http-tls-key go together")
	check(c.MaxConns >= 0 && c.MaxConnsPerUser >= 0 && c.NewConnsPerSec >= 0 && c.UpstreamRate >= 0 && c.GRPCRate >= 0, "limits must not be negative")
	check(c.ReadTimeout >= c.ReadHeaderTimeout && c.ReadTimeout > 0, "--read-timeout must be positive and at least --read-header-timeout")
	check(c.MaxHTTPConns >= 0, "--max-http-connections must not be negative")
	check(c.DrainWindow >= 0, "--drain-window must not be negative")
	check(c.Engine == "memory" || c.Engine == "redis", "--engine must be memory or redis, got %q", c.Engine)
	if c.Engine == "redis" {
		_, err := c.RedisShardOptions()
		check(err == nil, "--redis-url: %v", err)
		check(c.RedisPrefix != "" && !strings.ContainsAny(c.RedisPrefix, "{}"), "--redis-prefix must be non-empty, without { or }")
		check(c.RedisTimeout > 0, "--redis-timeout must be positive")
		check(c.NodeTTL >= 3*time.Second, "--node-ttl must be at least 3s")
		check(!(c.RedisCluster && c.RedisMasterName != ""), "--redis-cluster and --redis-master-name exclude each other")
		check(c.RedisClusterTags >= 1 && c.RedisClusterTags <= MaxRedisShards, "--redis-cluster-shards must be 1 to %d", MaxRedisShards)
		check(c.RedisClusterTags == 1 || c.RedisCluster, "--redis-cluster-shards needs --redis-cluster")
		check(len(c.RedisShards())*c.RedisClusterTags <= MaxRedisShards, "--redis-url URLs times --redis-cluster-shards: at most %d shards", MaxRedisShards)
		check(c.RedisWaitReplicas >= 0, "--redis-wait-replicas must not be negative")
		check(c.RedisWaitReplicas == 0 || c.RedisWaitTimeout > 0 && c.RedisWaitTimeout < c.RedisTimeout, "--redis-wait-timeout must be positive and below --redis-timeout (%v)", c.RedisTimeout)
		check(c.RedisWaitReplicas == 0 || !c.RedisCluster, "--redis-wait-replicas is not supported with --redis-cluster")
	}
	check(c.ShutdownDelay >= 0, "--shutdown-delay must not be negative")
	for _, a := range []struct{ flag, addr string }{{"--http-addr", c.HTTPAddr}, {"--grpc-addr", c.GRPCAddr}, {"--ops-addr", c.OpsAddr}} {
		if a.addr == "" && a.flag == "--ops-addr" {
			continue
		}
		_, _, err := net.SplitHostPort(a.addr)
		check(err == nil, "%s %q: %v", a.flag, a.addr, err)
	}
	return errs
}

// weakSecrets refuses secrets (by flag name) that are set but are a
// shipped placeholder or obviously weak (secret.Weak). The message names
// the flag and its variable, never the value.
func weakSecrets(byFlag map[string]string) []error {
	var errs []error
	names := make([]string, 0, len(byFlag))
	for name := range byFlag {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if v := byFlag[name]; v != "" {
			if why := secret.Weak(v); why != "" {
				errs = append(errs, fmt.Errorf("--%s (%s) %s; set a real secret, e.g. from openssl rand -base64 48", name, EnvName(name), why))
			}
		}
	}
	return errs
}

// WebhookKinds is --event-webhook-kinds, parsed (none: all).
func (c *Config) WebhookKinds() ([]gateway.EventKind, error) {
	names := map[string]gateway.EventKind{"user_online": gateway.EventUserOnline, "user_offline": gateway.EventUserOffline,
		"message_acked": gateway.EventMessageAcked, "client_message": gateway.EventClientMessage,
		"message_escalated": gateway.EventMessageEscalated, "topic_join": gateway.EventTopicJoin, "topic_leave": gateway.EventTopicLeave}
	var out []gateway.EventKind
	for _, k := range List(c.EventWebhookKinds) {
		kind, ok := names[k]
		if !ok {
			return nil, fmt.Errorf("unknown kind %q (user_online, user_offline, message_acked, client_message, message_escalated, topic_join, topic_leave)", k)
		}
		out = append(out, kind)
	}
	return out, nil
}

// Proxies is --trusted-proxies, parsed.
func (c *Config) Proxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range List(c.TrustedProxies) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// List splits a comma-separated option.
func List(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// LoopbackOnly reports whether addr can only be reached from this machine.
// An empty host or an unspecified address (0.0.0.0, ::) is every interface.
func LoopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	// A name: every address it resolves to must be loopback.
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}
