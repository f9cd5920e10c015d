// Command pushgate runs the push service: a gRPC API for backends and a
// WebSocket edge for browsers, web views and mini-programs, in one process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"pushgate/internal/app"
	"pushgate/internal/config"
	"pushgate/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process at once
	}()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "pushgate:", err)
		os.Exit(1)
	}
}

// run parses the configuration, starts pushgate and serves until ctx ends,
// then shuts down in order. It returns nil after a clean shutdown.
// "pushgate token ..." mints a client token instead, "pushgate config
// print" prints the settings and "pushgate version" the build.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "version" || wantsVersion(args) {
		_, err := fmt.Fprint(stdout, version.Get())
		return err
	}
	if len(args) > 0 && args[0] == "token" {
		return runToken(args[1:], getenv, stdout)
	}
	if len(args) > 0 && args[0] == "vapid" {
		return runVAPID(args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "config" {
		return runConfig(args[1:], getenv, stdout)
	}
	cfg, err := config.Parse(args, getenv, stdout)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	a, err := app.New(cfg, log)
	if err != nil {
		return err
	}
	return a.Serve(ctx)
}

// wantsVersion reports whether args ask for the version (--version or
// -version) before any "--".
func wantsVersion(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--version", "-version":
			return true
		}
	}
	return false
}

func newLogger(cfg config.Config, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	// Every line names the node (--node-name), so a cluster's logs can be
	// read together.
	return slog.New(h).With("node", cfg.NodeName), nil
}
