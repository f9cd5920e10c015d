package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Egress bounds where notifications may be sent. Push endpoints are
// chosen by clients (a browser's push service, or anything a client
// claims to be one) and webhook URLs by backends, so both would otherwise
// let a caller make pushgate post to any host, including those only
// reachable from inside the deployment.
type Egress struct {
	// WebhookHosts are the hosts webhook targets may name (empty: any):
	// "hooks.example.com" matches that host, "*.example.com" its
	// subdomains.
	WebhookHosts []string
	// AllowPrivate lets Web Push endpoints be on loopback, private,
	// link-local, shared (100.64/10) or unspecified addresses; otherwise
	// they are refused when registered (an address written in the URL)
	// and when connected to (a name that resolves to one).
	AllowPrivate bool
}

// ErrEgress marks a target that Egress refuses; the error's text starts
// with the field ("url: ...", "webpush.endpoint: ...").
var ErrEgress = errors.New("refused by the egress settings")

type egressError struct{ msg string }

func (e egressError) Error() string        { return e.msg }
func (e egressError) Is(target error) bool { return target == ErrEgress }

// Check refuses a target that Egress does not allow.
func (g Egress) Check(t Target) error {
	switch t.Channel {
	case ChannelWebhook:
		u, err := url.Parse(t.URL)
		if err != nil {
			return egressError{"url: must be an http(s) URL"}
		}
		if !g.WebhookHostAllowed(u.Hostname()) {
			return egressError{fmt.Sprintf("url: host %q is not in --notify-webhook-hosts", u.Hostname())}
		}
	case ChannelWebPush:
		if t.WebPush == nil || g.AllowPrivate {
			return nil
		}
		u, err := url.Parse(t.WebPush.Endpoint)
		if err != nil {
			return nil // Validate names it
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil && PrivateAddr(a) {
			return egressError{fmt.Sprintf("webpush.endpoint: %s is a private or loopback address (--notify-allow-private)", a)}
		}
	}
	return nil
}

// WebhookHostAllowed reports whether host may be a webhook target's.
func (g Egress) WebhookHostAllowed(host string) bool {
	if len(g.WebhookHosts) == 0 {
		return true
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range g.WebhookHosts {
		h = strings.ToLower(h)
		if sfx, ok := strings.CutPrefix(h, "*."); ok {
			if strings.HasSuffix(host, "."+sfx) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

// shared is 100.64.0.0/10 (RFC 6598), inside carriers' and clouds'
// networks.
var shared = netip.MustParsePrefix("100.64.0.0/10")

// PrivateAddr reports whether a is not on the public Internet: loopback,
// private (RFC 1918, fc00::/7), link-local, shared, unspecified or
// multicast.
func PrivateAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() || shared.Contains(a)
}

// errPrivateDial is the error of a connection refused by PublicHTTPClient.
var errPrivateDial = errors.New("resolves to a private or loopback address (--notify-allow-private)")

// PublicHTTPClient is NewHTTPClient that connects to public addresses
// only: the check is made on the address dialled, after name resolution,
// so a name that resolves (or is rebound) to an inside address is refused
// too. An HTTP proxy from the environment is dialled instead of the
// endpoint, so it must be on a public address and filter on its side.
func PublicHTTPClient() *http.Client {
	c := NewHTTPClient()
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || PrivateAddr(ap.Addr()) {
				return errPrivateDial
			}
			return nil
		}}
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
	return c
}
