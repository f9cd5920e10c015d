package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The command line explains itself: --help lists the flags by section with
// their defaults and variables, and a bad value is an error that names
// where it came from (flag, variable or file) and what would be accepted,
// without the whole help after it.

// Section is a heading of --help and the flags under it, in order.
type Section struct {
	Title string
	Flags []string
}

// Sections are the groups of pushgate --help. A flag missing here is listed
// under "Other" (and TestHelpSections fails, naming it).
var Sections = []Section{
	{"Listeners", []string{"http-addr", "grpc-addr", "ops-addr", "http-tls-cert", "http-tls-key", "grpc-tls-cert", "grpc-tls-key",
		"insecure", "allowed-origins", "trusted-proxies", "read-header-timeout", "read-timeout", "max-http-connections", "no-reflection", "no-http-api"}},
	{"Client auth (WebSocket clients)", []string{"auth", "jwt-secret", "jwt-public-key", "jwt-jwks", "jwt-audience", "jwt-issuer",
		"jwt-leeway", "jwt-max-lifetime", "token-cookie"}},
	{"API auth (gRPC callers)", []string{"api-keys", "api-keys-file", "grpc-client-ca"}},
	{"Limits", []string{"max-connections", "max-connections-per-user", "max-new-connections", "upstream-rate", "read-limit",
		"queue-max-messages", "queue-max-bytes", "max-user-id-bytes", "max-payload-bytes", "max-batch-users", "max-topics-per-connection",
		"inbox-max-messages", "inbox-max-bytes", "inbox-max-total-messages", "inbox-max-total-bytes", "idempotency-max-entries", "topic-history-max-total",
		"watch-max", "watch-max-per-key", "watch-buffer", "grpc-rate", "grpc-max-streams", "grpc-request-timeout",
		"grpc-max-connections-per-address", "grpc-reset-rate", "receipt-max", "client-publish-rate"}},
	{"Delivery", []string{"heartbeat-interval", "heartbeat-timeout", "write-timeout", "inbox-max-ttl", "presence-grace",
		"idempotency-window", "upstream-users", "upstream-topics", "client-publish-topics", "client-direct-users", "client-presence-topics", "topic-presence-events", "receipt-retention", "topic-history"}},
	{"Events (log, resume, webhook)", []string{"event-log-max", "event-log-retention", "event-webhook-url", "event-webhook-secret",
		"event-webhook-secret-file", "event-webhook-kinds", "event-webhook-queue", "event-webhook-timeout"}},
	{"Offline push (Web Push, WeChat, webhook)", []string{"vapid-private-key", "vapid-private-key-file", "vapid-subject", "wechat-app-id",
		"wechat-app-secret", "wechat-app-secret-file", "wechat-api-url", "wechat-state", "notify-webhook-secret",
		"notify-webhook-secret-file", "notify-webhook-hosts", "notify-allow-private", "notify-max-targets", "notify-max-pending", "notify-workers", "notify-queue", "notify-poll"}},
	{"Engine", []string{"engine", "redis-url", "redis-master-name", "redis-cluster", "redis-cluster-shards", "redis-prefix", "redis-timeout",
		"redis-wait-replicas", "redis-wait-timeout", "engine-timeout", "node-ttl"}},
	{"Operations", []string{"config", "log-format", "log-level", "node-name", "admin-password", "pprof", "shutdown-delay",
		"drain-window", "grpc-stop-timeout", "otlp-endpoint", "otlp-protocol", "trace-sample-ratio"}},
}

// defaultNotes replace a default that depends on the machine in --help.
var defaultNotes = map[string]string{"node-name": "the host name"}

// origins records where each flag's value came from, for error messages.
type origins struct {
	current string            // the source being applied now
	from    map[string]string // flag name → its source, for values not from the command line
}

// tracked is a flag.Value that records its source and turns a parse error
// into one that says what would be accepted.
type tracked struct {
	flag.Value
	name string
	o    *origins
}

func (v *tracked) Set(s string) error {
	if err := v.Value.Set(s); err != nil {
		return errors.New(want(v.Value))
	}
	if v.o.current == "" {
		delete(v.o.from, v.name)
	} else {
		v.o.from[v.name] = v.o.current
	}
	return nil
}

// Get is the typed value (flag.Getter), for "config print".
func (v *tracked) Get() any { return v.Value.(flag.Getter).Get() }

// IsBoolFlag lets a boolean flag stand alone (--insecure).
func (v *tracked) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// want says what a flag accepts, from the type of its value.
func want(v flag.Value) string {
	g, ok := v.(flag.Getter)
	if !ok {
		return "not a valid value"
	}
	switch g.Get().(type) {
	case time.Duration:
		return "want a duration such as 5s (units ns, us, ms, s, m, h: 500ms, 1m30s)"
	case bool:
		return "want true or false"
	case int, int64, uint, uint64:
		return "want a whole number such as 100"
	case float64:
		return "want a number such as 20 or 0.5"
	}
	return "not a valid value"
}

// track wraps every flag of fs so that values record their source.
func track(fs *flag.FlagSet) *origins {
	o := &origins{from: map[string]string{}}
	fs.VisitAll(func(f *flag.Flag) {
		if _, done := f.Value.(*tracked); !done {
			f.Value = &tracked{Value: f.Value, name: f.Name, o: o}
		}
	})
	return o
}

// applyEnv sets every flag of fs whose PUSHGATE_* variable is set.
func applyEnv(fs *flag.FlagSet, o *origins, getenv func(string) string) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := EnvName(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		o.current = name
		if err := fs.Set(f.Name, v); err != nil {
			if secretFlags[f.Name] {
				errs = append(errs, fmt.Errorf("%s (--%s): %v", name, f.Name, err))
			} else {
				errs = append(errs, fmt.Errorf("%s=%q (--%s): %v", name, v, f.Name, err))
			}
		}
	})
	o.current = ""
	return errors.Join(errs...)
}

var (
	errInvalid  = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-(\S+): (.*)$`)
	errUndef    = regexp.MustCompile(`^flag provided but not defined: -(\S+)$`)
	errNoArg    = regexp.MustCompile(`^flag needs an argument: -(\S+)$`)
	flagMention = regexp.MustCompile(`--([a-z0-9]+(?:-[a-z0-9]+)*)`)
)

// ParseArgs parses args into fs the way every pushgate command does: the
// usage is not printed on an error (only for -h/--help, and then
// flag.ErrHelp is returned), and the error names the flag with --, says
// what would be accepted and, for an unknown flag, the nearest known one.
func ParseArgs(fs *flag.FlagSet, args []string) error {
	track(fs) // values say what they accept (a no-op for Load's)
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	case err == nil:
		if fs.NArg() > 0 {
			return fmt.Errorf("unexpected argument %q (flags are written --name value; see --help)", fs.Arg(0))
		}
		return nil
	}
	msg := err.Error()
	if m := errInvalid.FindStringSubmatch(msg); m != nil {
		if secretFlags[m[2]] {
			return fmt.Errorf("--%s: %s", m[2], m[3])
		}
		return fmt.Errorf("--%s %q: %s", m[2], m[1], m[3])
	}
	if m := errUndef.FindStringSubmatch(msg); m != nil {
		if near := nearest(fs, m[1]); near != "" {
			return fmt.Errorf("unknown flag --%s; did you mean --%s? (see --help)", m[1], near)
		}
		return fmt.Errorf("unknown flag --%s (see --help)", m[1])
	}
	if m := errNoArg.FindStringSubmatch(msg); m != nil {
		if w := want(fs.Lookup(m[1]).Value); strings.HasPrefix(w, "want ") {
			return fmt.Errorf("--%s needs a value: %s", m[1], strings.TrimPrefix(w, "want "))
		}
		return fmt.Errorf("--%s needs a value (see --help)", m[1])
	}
	return err
}

// nearest is the flag of fs closest to name, if it is close enough to be
// what was meant.
func nearest(fs *flag.FlagSet, name string) string {
	best, bestD := "", 0
	fs.VisitAll(func(f *flag.Flag) {
		d := distance(name, f.Name)
		if strings.HasPrefix(f.Name, name) || strings.HasPrefix(name, f.Name) {
			d = min(d, 2)
		}
		if best == "" || d < bestD {
			best, bestD = f.Name, d
		}
	})
	if bestD > 3 || bestD*3 > len(name) {
		return ""
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// annotate adds to each error the source of the flags it names that were
// not set on the command line (a variable or the --config file), unless
// the message already names it.
func annotate(errs []error, o *origins) []error {
	out := make([]error, 0, len(errs))
	for _, err := range errs {
		msg := err.Error()
		var notes []string
		seen := map[string]bool{}
		for _, m := range flagMention.FindAllStringSubmatch(msg, -1) {
			src, ok := o.from[m[1]]
			if !ok || seen[m[1]] || strings.Contains(msg, src) {
				continue
			}
			seen[m[1]] = true
			notes = append(notes, fmt.Sprintf("--%s set by %s", m[1], src))
		}
		if len(notes) > 0 {
			err = fmt.Errorf("%w (%s)", err, strings.Join(notes, "; "))
		}
		out = append(out, err)
	}
	return out
}

// PrintFlags writes the flags of fs under the headings of sections (flags
// in no section last, under "Other"), each with its value placeholder,
// description, default and the variable env names for it (none if "").
func PrintFlags(w io.Writer, fs *flag.FlagSet, sections []Section, env func(flagName string) string) {
	listed := map[string]bool{}
	print := func(title string, names []string) {
		if len(names) == 0 {
			return
		}
		if title != "" {
			fmt.Fprintf(w, "%s:\n", title)
		}
		for _, name := range names {
			f := fs.Lookup(name)
			if f == nil {
				continue
			}
			listed[name] = true
			placeholder, usage := describe(f)
			fmt.Fprintf(w, "  --%s%s\n", f.Name, placeholder)
			for _, line := range wrap(usage, 72) {
				fmt.Fprintf(w, "        %s\n", line)
			}
			def := f.DefValue
			if note, ok := defaultNotes[f.Name]; ok {
				def = note
			} else if def == "" {
				def = "none"
			}
			if v := env(f.Name); v != "" {
				fmt.Fprintf(w, "        default: %s   env: %s\n", def, v)
			} else {
				fmt.Fprintf(w, "        default: %s\n", def)
			}
		}
		fmt.Fprintln(w)
	}
	for _, s := range sections {
		print(s.Title, s.Flags)
	}
	var rest []string
	fs.VisitAll(func(f *flag.Flag) {
		if !listed[f.Name] {
			rest = append(rest, f.Name)
		}
	})
	title := "Other"
	if len(sections) == 0 {
		title = "Flags"
	}
	print(title, rest)
}

// describe returns a flag's value placeholder (" duration", " address", or
// nothing for a boolean) and its usage text without the backquotes that
// name the placeholder.
func describe(f *flag.Flag) (string, string) {
	usage := f.Usage
	name := ""
	if i := strings.IndexByte(usage, '`'); i >= 0 {
		if j := strings.IndexByte(usage[i+1:], '`'); j >= 0 {
			name = usage[i+1 : i+1+j]
			usage = usage[:i] + name + usage[i+1+j+1:]
		}
	}
	if name == "" {
		if g, ok := f.Value.(flag.Getter); ok {
			switch g.Get().(type) {
			case bool:
				return "", usage
			case time.Duration:
				name = "duration"
			case int, int64, uint, uint64:
				name = "n"
			case float64:
				name = "number"
			default:
				name = "string"
			}
		} else {
			name = "value"
		}
	}
	return " " + name, usage
}

// wrap breaks s into lines of at most width bytes, at spaces.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// yamlScalar is a flag's effective value as a YAML scalar of its type:
// numbers and booleans bare, durations and strings as strings (quoted when
// YAML would read them as something else).
func yamlScalar(f *flag.Flag) string {
	if g, ok := f.Value.(flag.Getter); ok {
		switch v := g.Get().(type) {
		case bool:
			return strconv.FormatBool(v)
		case int:
			return strconv.Itoa(v)
		case int64:
			return strconv.FormatInt(v, 10)
		case uint:
			return strconv.FormatUint(uint64(v), 10)
		case uint64:
			return strconv.FormatUint(v, 10)
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ""
}
