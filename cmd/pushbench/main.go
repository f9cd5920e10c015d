// Command pushbench is pushgate's load generator. It holds WebSocket
// connections (spread over child processes and local source addresses to get
// past the per-process file limit and the port range), drives the gRPC API,
// and reports deliveries per second, latency percentiles, losses and
// duplicates, and the server's memory and CPU.
//
// Scenarios:
//
//	idle     hold N connections; report the server's memory per connection
//	fanout   Broadcast at --rate per second to N connections
//	unicast  SendToUser to random users among N at --rate per second
//	storm    N clients connect at once (as after a restart); time until all are back
//	mixed    unicast and a broadcast every second at the same time
//
// Every payload carries its send time and a sequence number; every loop is
// bounded in count and time. With --target centrifugo the idle and fanout
// scenarios run against Centrifugo instead (see centrifugo.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "pushbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "child" {
		return runChild(ctx, stdin, stdout)
	}
	if len(args) > 0 && args[0] == "reference" {
		return runReference(ctx, args[1:], stderr)
	}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	res, err := runScenario(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	res.table(stdout)
	return nil
}
