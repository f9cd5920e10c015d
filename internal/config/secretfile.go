package config

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Secrets that may be read from a file instead (a mounted Kubernetes or
// Docker secret, for example), so they appear in no process list and no
// environment: --X-file names the file, whose content (trailing line
// breaks removed) is the value of --X. The value is then checked like one
// given directly (lengths, placeholders), the messages naming --X-file.

// secretFile is one --X / --X-file pair.
type secretFile struct {
	flag  string
	value func(*Config) *string
	file  func(*Config) *string
}

var secretFiles = []secretFile{
	{"vapid-private-key", func(c *Config) *string { return &c.VAPIDPrivateKey }, func(c *Config) *string { return &c.VAPIDPrivateKeyFile }},
	{"wechat-app-secret", func(c *Config) *string { return &c.WeChatAppSecret }, func(c *Config) *string { return &c.WeChatAppSecretFile }},
	{"notify-webhook-secret", func(c *Config) *string { return &c.WebhookSecret }, func(c *Config) *string { return &c.WebhookSecretFile }},
	{"event-webhook-secret", func(c *Config) *string { return &c.EventWebhookSecret }, func(c *Config) *string { return &c.EventWebhookSecretFile }},
}

// maxSecretFile is the largest secret file read.
const maxSecretFile = 64 << 10

// readSecretFiles sets each --X from its --X-file. Errors name the flag
// and the file, never what the file holds.
func (c *Config) readSecretFiles() []error {
	var errs []error
	for _, s := range secretFiles {
		path := *s.file(c)
		if path == "" {
			continue
		}
		if *s.value(c) != "" {
			errs = append(errs, fmt.Errorf("--%s and --%s-file are both set; set one", s.flag, s.flag))
			continue
		}
		v, err := readSecret(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s-file: %w", s.flag, err))
			continue
		}
		*s.value(c) = v
	}
	return errs
}

// readSecret returns the content of the file at path without trailing
// line breaks; an empty or oversized file is an error.
func readSecret(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("%s is over %d bytes: not a secret", path, maxSecretFile)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}

// secretName is the flag a secret came from: --X, or --X-file when it was
// read from a file.
func (c *Config) secretName(flag string) string {
	for _, s := range secretFiles {
		if s.flag == flag && *s.file(c) != "" {
			return flag + "-file"
		}
	}
	return flag
}

// fromFile reports whether secret flag name of fs was read from its -file
// flag (config print then shows the file, not the value).
func fromFile(fs *flag.FlagSet, name string) bool {
	f := fs.Lookup(name + "-file")
	return f != nil && f.Value.String() != ""
}
