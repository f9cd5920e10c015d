package app

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
)

// Every endpoint that is open only because its listener is on loopback
// refuses a foreign Host (DNS rebinding), whatever the client auth mode;
// endpoints that authenticate their callers answer any Host. Every
// combination of client auth, a separate ops listener and an admin guard.
func TestAdminPprofAndLoopbackOnlyEndpointsRefuseForeignHosts(t *testing.T) {
	const secret = "q8V0e3s1vYxWm6Pz0TqfL2bA9rK7nC4d"
	noKeepAlive := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, auth := range []string{"none", "jwt"} {
		for _, opsSep := range []bool{false, true} {
			for _, guard := range []string{"none", "password", "keys"} {
				name := fmt.Sprintf("auth=%s,ops=%v,guard=%s", auth, opsSep, guard)
				t.Run(name, func(t *testing.T) {
					args := []string{"--pprof"}
					if auth == "jwt" {
						args = append(args, "--auth", "jwt", "--jwt-secret", secret)
					}
					if opsSep {
						args = append(args, "--ops-addr", "127.0.0.1:0")
					}
					switch guard {
					case "password":
						args = append(args, "--admin-password", "Tr0ub4dor&3-correct-horse")
					case "keys":
						args = append(args, "--api-keys", "orders:k3Yq9w2LmZ8xV4tR7pB1")
					}
					a, err := newTestApp(t, args...)
					if err != nil {
						t.Fatal(err)
					}
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan error, 1)
					go func() { done <- a.Serve(ctx) }()
					defer func() {
						cancel()
						if err := <-done; err != nil {
							t.Errorf("Serve: %v", err)
						}
					}()

					// What the rules say.
					httpOpen := auth == "none"     // nothing authenticates /ws: the whole listener is local
					adminOpen := guard == "none"   // nothing authenticates /admin and pprof
					opsOpen := opsSep && adminOpen // the ops listener as a whole
					opsLocal := opsSep && opsOpen || !opsSep && httpOpen
					forbidden := func(local bool, otherwise int) int {
						if local {
							return http.StatusForbidden
						}
						return otherwise
					}
					adminWant := forbidden(adminOpen || opsLocal, http.StatusUnauthorized)
					adminLocalWant := http.StatusOK
					if !adminOpen {
						adminLocalWant = http.StatusUnauthorized
					}
					demoWant := forbidden(httpOpen, http.StatusNotFound) // only with --auth none
					wsWant := forbidden(httpOpen, http.StatusUnauthorized)

					_, httpPort, _ := net.SplitHostPort(a.HTTPAddr())
					_, opsPort, _ := net.SplitHostPort(a.OpsAddr())
					for _, tc := range []struct {
						method, addr, path, host string
						want                     int
					}{
						{"GET", a.OpsAddr(), "/admin/api/stats", "attacker.example:" + opsPort, adminWant},
						{"POST", a.OpsAddr(), "/admin/api/send", "attacker.example:" + opsPort, adminWant},
						{"POST", a.OpsAddr(), "/admin/api/kick", "attacker.example", adminWant},
						{"GET", a.OpsAddr(), "/debug/pprof/", "attacker.example:" + opsPort, adminWant},
						{"GET", a.OpsAddr(), "/debug/pprof/cmdline", "attacker.example:" + opsPort, adminWant},
						{"GET", a.OpsAddr(), "/healthz", "attacker.example:" + opsPort, forbidden(opsLocal, http.StatusOK)},
						{"GET", a.HTTPAddr(), "/ws", "attacker.example:" + httpPort, wsWant},
						{"POST", a.HTTPAddr(), "/demo/send", "attacker.example:" + httpPort, demoWant},
						// The same from this machine.
						{"GET", a.OpsAddr(), "/admin/api/stats", "localhost:" + opsPort, adminLocalWant},
						{"GET", a.OpsAddr(), "/debug/pprof/", "127.0.0.1:" + opsPort, adminLocalWant},
						{"GET", a.OpsAddr(), "/healthz", "[::1]:" + opsPort, http.StatusOK},
					} {
						req, _ := http.NewRequest(tc.method, "http://"+tc.addr+tc.path, strings.NewReader("{}"))
						req.Host = tc.host
						req.Header.Set("Content-Type", "application/json")
						if tc.path == "/ws" {
							req.Header.Set("Connection", "Upgrade")
							req.Header.Set("Upgrade", "websocket")
							req.Header.Set("Sec-WebSocket-Version", "13")
							req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
						}
						resp, err := noKeepAlive.Do(req)
						if err != nil {
							t.Fatal(err)
						}
						resp.Body.Close()
						if resp.StatusCode != tc.want {
							t.Errorf("%s %s with Host %s: %d, want %d", tc.method, tc.path, tc.host, resp.StatusCode, tc.want)
						}
					}
				})
			}
		}
	}
}
