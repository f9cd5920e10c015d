package main

import (
	"flag"
	"fmt"
	"io"

	"pushgate/internal/notify"
)

// runVAPID is "pushgate vapid": it prints a new VAPID key pair for Web
// Push (docs/offline-push.md).
func runVAPID(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pushgate vapid", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pushgate vapid\n\nPrints a new VAPID key pair (P-256, base64url) for Web Push: keep the private key\nsecret (--vapid-private-key, PUSHGATE_VAPID_PRIVATE_KEY); browsers subscribe with\nthe public key.\n")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("pushgate vapid takes no arguments, got %q", fs.Args())
	}
	priv, pub, err := notify.GenerateVAPID()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "private key: %s\npublic key:  %s\n", priv, pub)
	return err
}
