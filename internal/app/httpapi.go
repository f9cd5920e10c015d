package app

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"pushgate/internal/config"
	"pushgate/server"
)

// mountHTTPAPI serves the HTTP/JSON API on the HTTP listener's mux: the
// gRPC server's PushService as JSON POSTs, through the same interceptors
// (API keys, rate limit, validation, logging, metrics). The HTTP listener
// is the one browsers reach, so the API is served there only when it is
// guarded as the gRPC listener would have to be: by API keys, or by a
// loopback address (then requests must name a loopback Host, against DNS
// rebinding), or by --insecure's explicit consent. With --grpc-client-ca
// gRPC callers must present a certificate, which the HTTP listener cannot
// ask for: the API is not served there.
func (a *App) mountHTTPAPI(mux *http.ServeMux, apiKeys bool, reg prometheus.Registerer) error {
	cfg := a.cfg
	if cfg.NoHTTPAPI {
		return nil
	}
	if cfg.GRPCClientCA != "" {
		a.log.Warn("HTTP/JSON API off: gRPC callers must present a client certificate (--grpc-client-ca), which the HTTP listener cannot check; set --no-http-api to silence this")
		return nil
	}
	loopback := config.LoopbackOnly(cfg.HTTPAddr)
	if !apiKeys && !loopback && !cfg.Insecure {
		a.log.Warn("HTTP/JSON API off: --http-addr is reachable from the network and no API keys are configured; set --api-keys (or --no-http-api to silence this)", "addr", cfg.HTTPAddr)
		return nil
	}
	// The body's arrival is bounded as a gRPC call's request is, and as
	// any request's on this listener: the shorter bound applies.
	h, err := server.NewHTTPHandler(a.grpc, server.HTTPOptions{
		RequestTimeout: min(cfg.GRPCRequestTimeout, cfg.ReadTimeout), Registerer: reg,
	})
	if err != nil {
		return err
	}
	a.httpAPI = h
	var handler http.Handler = h
	if !apiKeys && loopback {
		handler = loopbackHostOnly(h)
	}
	mux.Handle("/pushgate.v1.PushService/", handler)
	return nil
}
