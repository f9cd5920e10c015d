package main

// Checks of the deployment files (Dockerfile, deploy/kubernetes,
// deploy/systemd, deploy/nginx) against the real flag set: their arguments
// and environment must parse and validate, would pass protected mode, and
// their timeouts must fit pushgate's shutdown sequence.

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"pushgate/gateway/token"
	"pushgate/internal/app"
	"pushgate/internal/config"
	"pushgate/server"
)

// deployCloseSlack is the time App.shutdown gives the last close handshakes
// after --drain-window.
const deployCloseSlack = 5 * time.Second

// deployWorstStop is the longest pushgate may take to exit after SIGTERM:
// not ready for --shutdown-delay, gRPC calls for --grpc-stop-timeout, client
// closes over --drain-window plus the close handshakes, then the ops
// listener's shutdown (app.HTTPStopTimeout). The plain HTTP shutdown runs in
// parallel with the gRPC and client steps.
func deployWorstStop(c config.Config) time.Duration {
	return c.ShutdownDelay + c.GRPCStopTimeout + c.DrainWindow + deployCloseSlack + app.HTTPStopTimeout
}

func deployStopArithmetic(c config.Config) string {
	return fmt.Sprintf("shutdown-delay %v + grpc-stop-timeout %v + drain-window %v + close handshakes %v + ops shutdown %v = %v",
		c.ShutdownDelay, c.GRPCStopTimeout, c.DrainWindow, deployCloseSlack, app.HTTPStopTimeout, deployWorstStop(c))
}

// deployRoot is the repository root (tests run in cmd/pushgate).
func deployRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found at %s: %v", root, err)
	}
	return root
}

func deployRead(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployRoot(t), rel))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return string(b)
}

func deployGetenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// deployEnvNames maps every PUSHGATE_* variable pushgate reads to its flag.
func deployEnvNames(t *testing.T) map[string]string {
	t.Helper()
	_, fs, _ := config.Load(nil, func(string) string { return "" }, io.Discard)
	names := map[string]string{"PUSHGATE_CONFIG": "config"}
	fs.VisitAll(func(f *flag.Flag) { names[config.EnvName(f.Name)] = f.Name })
	return names
}

// deployCheckEnvNames fails for PUSHGATE_* variables that pushgate does not
// read (a typo there is silently ignored at run time).
func deployCheckEnvNames(t *testing.T, where string, env map[string]string) {
	t.Helper()
	known := deployEnvNames(t)
	for k := range env {
		if strings.HasPrefix(k, "PUSHGATE_") && known[k] == "" {
			t.Errorf("%s: environment variable %s is not read by pushgate (no such flag; see pushgate --help)", where, k)
		}
	}
}

// deployParse parses args and env exactly as pushgate does at start.
func deployParse(t *testing.T, where string, args []string, env map[string]string) (config.Config, *flag.FlagSet) {
	t.Helper()
	cfg, fs, err := config.Load(args, deployGetenv(env), io.Discard)
	if err != nil {
		t.Fatalf("%s: pushgate would not start with args %q: %v", where, args, err)
	}
	return cfg, fs
}

// deployProtectedMode runs the start-up checks app.New makes before binding:
// the client token verifier, the API keys and protected mode.
func deployProtectedMode(cfg config.Config) error {
	var verifier *token.Verifier
	if cfg.Auth == "jwt" {
		var err error
		verifier, err = token.NewVerifier(token.Config{
			Secret: []byte(cfg.JWTSecret), PublicKeyFile: cfg.JWTPublicKey, JWKSFile: cfg.JWTJWKS,
			Audience: cfg.JWTAudience, Issuer: cfg.JWTIssuer, Leeway: cfg.JWTLeeway,
		})
		if err != nil {
			return fmt.Errorf("--auth jwt: %w", err)
		}
	}
	keys, err := server.ParseAPIKeys(cfg.APIKeys)
	if err != nil {
		return fmt.Errorf("--api-keys (PUSHGATE_API_KEYS): %w", err)
	}
	return app.ProtectedMode(cfg, verifier != nil, keys.Len() > 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// deploySecretVars are the variables that carry secrets.
var deploySecretVars = []string{"PUSHGATE_JWT_SECRET", "PUSHGATE_API_KEYS", "PUSHGATE_ADMIN_PASSWORD"}

// deployOpenSSLRand matches the commands the deployment files tell the
// operator to generate secrets with.
var deployOpenSSLRand = regexp.MustCompile(`\$\(openssl rand -(base64|hex) (\d+)\)`)

// deployExpand runs the $(openssl rand -base64|-hex N) commands in a
// documented value, as the operator's shell would; anything else that
// looks like a command substitution is an error.
func deployExpand(t *testing.T, where, v string) string {
	t.Helper()
	out := deployOpenSSLRand.ReplaceAllStringFunc(v, func(m string) string {
		sub := deployOpenSSLRand.FindStringSubmatch(m)
		n, _ := strconv.Atoi(sub[2])
		b := make([]byte, n)
		rand.Read(b)
		if sub[1] == "hex" {
			return hex.EncodeToString(b)
		}
		return base64.StdEncoding.EncodeToString(b)
	})
	if strings.Contains(out, "$") || strings.Contains(out, "`") {
		t.Fatalf("%s: %q: only $(openssl rand -base64|-hex N) can be expanded here", where, v)
	}
	return out
}

// deployRefusesPlaceholders checks that pushgate refuses to start with each
// secret in env as shipped (the others made real), naming its variable.
func deployRefusesPlaceholders(t *testing.T, where string, args []string, shipped, real map[string]string) {
	t.Helper()
	for _, k := range deploySecretVars {
		if _, ok := shipped[k]; !ok {
			continue
		}
		env := map[string]string{}
		for name, v := range real {
			env[name] = v
		}
		env[k] = shipped[k]
		cfg, _, err := config.Load(args, deployGetenv(env), io.Discard)
		if err == nil {
			err = deployProtectedMode(cfg)
		}
		flagName := "--" + strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "PUSHGATE_"), "_", "-"))
		if err == nil {
			t.Errorf("%s: pushgate starts with %s as shipped; a placeholder must be refused", where, k)
		} else if !strings.Contains(err.Error(), k) || !strings.Contains(err.Error(), flagName) {
			t.Errorf("%s: %s as shipped is refused with %q, which does not name %s and %s", where, k, err, k, flagName)
		}
	}
}

func deployPort(t *testing.T, flagName, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", flagName, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 {
		t.Fatalf("%s %q: want a fixed numeric port, got %q", flagName, addr, p)
	}
	return n
}

// ---------------------------------------------------------------- Kubernetes

type k8sMeta struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string  `yaml:"name"`
		Value     *string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []any `yaml:"envFrom"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		RunAsUser                *int  `yaml:"runAsUser"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             *struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
}

type k8sObject struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   k8sMeta           `yaml:"metadata"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		// Deployment
		Replicas *int `yaml:"replicas"`
		Selector *struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template *struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     struct {
				TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               *struct {
					RunAsNonRoot *bool `yaml:"runAsNonRoot"`
					RunAsUser    *int  `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Affinity *struct {
					PodAntiAffinity any `yaml:"podAntiAffinity"`
				} `yaml:"affinity"`
				Containers []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		// Service (its selector is a plain map; see serviceSelector)
		Type  string `yaml:"type"`
		Ports []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
		// PodDisruptionBudget
		MaxUnavailable any `yaml:"maxUnavailable"`
		MinAvailable   any `yaml:"minAvailable"`
	} `yaml:"spec"`
	serviceSelector map[string]string
}

// deployK8sDocs parses every document of a manifest file and checks the
// fields every object needs.
func deployK8sDocs(t *testing.T, rel string) []k8sObject {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(deployRead(t, rel)))
	var objs []k8sObject
	for i := 1; ; i++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d is not valid YAML: %v", rel, i, err)
		}
		if len(node.Content) == 0 || node.Content[0].Kind == yaml.ScalarNode && node.Content[0].Tag == "!!null" {
			continue // an empty document (a comment, or "---" at the start)
		}
		var generic map[string]any
		if err := node.Decode(&generic); err != nil {
			t.Fatalf("%s: document %d is not a mapping: %v", rel, i, err)
		}
		var o k8sObject
		if err := node.Decode(&o); err != nil {
			t.Fatalf("%s: document %d (%v %v): unexpected structure: %v", rel, i, generic["kind"], generic["metadata"], err)
		}
		if spec, ok := generic["spec"].(map[string]any); ok && o.Kind == "Service" {
			if sel, ok := spec["selector"].(map[string]any); ok {
				o.serviceSelector = map[string]string{}
				for k, v := range sel {
					o.serviceSelector[k] = fmt.Sprint(v)
				}
			}
		}
		switch {
		case o.APIVersion == "":
			t.Errorf("%s: document %d has no apiVersion", rel, i)
		case o.Kind == "":
			t.Errorf("%s: document %d has no kind", rel, i)
		case o.Metadata.Name == "":
			t.Errorf("%s: document %d (%s) has no metadata.name", rel, i, o.Kind)
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		t.Fatalf("%s: no Kubernetes objects", rel)
	}
	return objs
}

func deployFind(t *testing.T, rel string, objs []k8sObject, kind string) *k8sObject {
	t.Helper()
	var found *k8sObject
	for i := range objs {
		if objs[i].Kind == kind {
			if found != nil {
				t.Fatalf("%s: more than one %s", rel, kind)
			}
			found = &objs[i]
		}
	}
	if found == nil {
		t.Fatalf("%s: no %s", rel, kind)
	}
	return found
}

// deploySelects reports whether selector (non-empty) matches labels.
func deploySelects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// deployContainerPort resolves a probe or Service port (a number or a port
// name) to a container port number.
func deployContainerPort(c k8sContainer, port any) (int, error) {
	switch p := port.(type) {
	case int:
		return p, nil
	case string:
		if n, err := strconv.Atoi(p); err == nil {
			return n, nil
		}
		for _, cp := range c.Ports {
			if cp.Name == p {
				return cp.ContainerPort, nil
			}
		}
		return 0, fmt.Errorf("no container port named %q", p)
	}
	return 0, fmt.Errorf("port %v (%T) is neither a number nor a name", port, port)
}

func TestDeployKubernetes(t *testing.T) {
	const rel = "deploy/kubernetes/pushgate.yaml"
	objs := deployK8sDocs(t, rel)
	for _, o := range objs {
		if o.Kind == "Namespace" {
			t.Errorf("%s: has a Namespace %q; the manifest is meant to be applied with -n", rel, o.Metadata.Name)
		}
	}
	for _, o := range objs {
		if o.Kind == "Secret" {
			t.Errorf("%s: ships Secret %q; its values would be everyone's: document kubectl create secret instead", rel, o.Metadata.Name)
		}
	}
	secretName, secretData := deployK8sSecretCommand(t, rel)
	dep := deployFind(t, rel, objs, "Deployment")
	svc := deployFind(t, rel, objs, "Service")
	pdb := deployFind(t, rel, objs, "PodDisruptionBudget")

	for _, k := range []string{"PUSHGATE_JWT_SECRET", "PUSHGATE_API_KEYS"} {
		if _, ok := secretData[k]; !ok {
			t.Errorf("%s: the documented kubectl create secret does not set %s", rel, k)
		}
	}

	if dep.Spec.Template == nil || len(dep.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%s: Deployment %s: want a pod template with exactly one container", rel, dep.Metadata.Name)
	}
	pod := dep.Spec.Template
	podLabels := pod.Metadata.Labels
	c := pod.Spec.Containers[0]
	where := fmt.Sprintf("%s: Deployment %s, container %s", rel, dep.Metadata.Name, c.Name)
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("%s: want 2 or more replicas", where)
	}
	if dep.Spec.Selector == nil || !deploySelects(dep.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("%s: spec.selector does not select the pod template's labels %v", where, podLabels)
	}
	if len(c.Command) > 0 {
		t.Errorf("%s: command %q overrides the image's ENTRYPOINT; use args", where, c.Command)
	}

	// The environment, with Secret references resolved from the documented
	// kubectl create secret, its $(openssl rand …) run.
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.Value != nil:
			env[e.Name] = *e.Value
			for _, k := range deploySecretVars {
				if e.Name == k {
					t.Errorf("%s: env %s has its value in the manifest; take it from the Secret", where, e.Name)
				}
			}
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != secretName {
				t.Errorf("%s: env %s refers to Secret %q, but the documented kubectl create secret makes %q", where, e.Name, ref.Name, secretName)
			}
			v, ok := secretData[ref.Key]
			if !ok {
				t.Errorf("%s: env %s refers to key %q, which the documented kubectl create secret does not set", where, e.Name, ref.Key)
			}
			env[e.Name] = v
		default:
			t.Errorf("%s: env %s has neither a value nor a secretKeyRef", where, e.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		for k, v := range secretData {
			env[k] = v
		}
	}
	deployCheckEnvNames(t, where, env)
	if env["PUSHGATE_AUTH"] != "jwt" {
		t.Errorf("%s: want PUSHGATE_AUTH=jwt, got %q", where, env["PUSHGATE_AUTH"])
	}

	cfg, _ := deployParse(t, where, c.Args, env)
	if err := deployProtectedMode(cfg); err != nil {
		t.Errorf("%s: pushgate would refuse to start: %v", where, err)
	}
	if cfg.OpsAddr == "" {
		t.Fatalf("%s: no --ops-addr; probes and metrics belong on the ops listener", where)
	}
	if cfg.LogFormat != "json" {
		t.Errorf("%s: want --log-format json, got %q", where, cfg.LogFormat)
	}
	if cfg.ShutdownDelay <= 0 {
		t.Errorf("%s: want a --shutdown-delay, so endpoints are removed before listeners close", where)
	}

	// Container ports match the listeners.
	portNamed := map[string]int{}
	for _, p := range c.Ports {
		portNamed[p.Name] = p.ContainerPort
	}
	for _, l := range []struct{ name, flag, addr string }{
		{"http", "--http-addr", cfg.HTTPAddr}, {"grpc", "--grpc-addr", cfg.GRPCAddr}, {"ops", "--ops-addr", cfg.OpsAddr},
	} {
		want := deployPort(t, l.flag, l.addr)
		if got, ok := portNamed[l.name]; !ok {
			t.Errorf("%s: no container port named %q (%s %s)", where, l.name, l.flag, l.addr)
		} else if got != want {
			t.Errorf("%s: container port %q is %d, but %s is %s", where, l.name, got, l.flag, l.addr)
		}
		if config.LoopbackOnly(l.addr) {
			t.Errorf("%s: %s %s is loopback only: unreachable from outside the pod", where, l.flag, l.addr)
		}
	}

	// Probes on the ops listener.
	opsPort := deployPort(t, "--ops-addr", cfg.OpsAddr)
	for _, p := range []struct {
		name  string
		probe *k8sProbe
		paths []string
	}{
		{"readinessProbe", c.ReadinessProbe, []string{"/readyz"}},
		{"livenessProbe", c.LivenessProbe, []string{"/healthz"}},
		{"startupProbe", c.StartupProbe, []string{"/healthz", "/readyz"}},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no %s with httpGet", where, p.name)
			continue
		}
		if !deployContains(p.paths, p.probe.HTTPGet.Path) {
			t.Errorf("%s: %s path is %q, want %s", where, p.name, p.probe.HTTPGet.Path, strings.Join(p.paths, " or "))
		}
		port, err := deployContainerPort(c, p.probe.HTTPGet.Port)
		if err != nil {
			t.Errorf("%s: %s: %v", where, p.name, err)
		} else if port != opsPort {
			t.Errorf("%s: %s checks port %d, but the health endpoints are on --ops-addr %s", where, p.name, port, cfg.OpsAddr)
		}
	}

	// Prometheus scrapes the ops port.
	ann := pod.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" {
		t.Errorf("%s: pod annotation prometheus.io/scrape is %q, want \"true\"", where, ann["prometheus.io/scrape"])
	}
	if ann["prometheus.io/port"] != strconv.Itoa(opsPort) {
		t.Errorf("%s: pod annotation prometheus.io/port is %q, but metrics are on --ops-addr %s", where, ann["prometheus.io/port"], cfg.OpsAddr)
	}
	if p := ann["prometheus.io/path"]; p != "" && p != "/metrics" {
		t.Errorf("%s: pod annotation prometheus.io/path is %q, want /metrics", where, p)
	}

	// The grace period covers the whole shutdown sequence.
	grace := pod.Spec.TerminationGracePeriodSeconds
	if grace == nil {
		t.Errorf("%s: no terminationGracePeriodSeconds (the default 30s does not fit %s)", where, deployStopArithmetic(cfg))
	} else if g := time.Duration(*grace) * time.Second; g <= deployWorstStop(cfg) {
		t.Errorf("%s: terminationGracePeriodSeconds %d is too short: %s, and the grace period must be longer", where, *grace, deployStopArithmetic(cfg))
	}

	// Security.
	sc := c.SecurityContext
	podNonRoot := pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.RunAsNonRoot != nil && *pod.Spec.SecurityContext.RunAsNonRoot
	switch {
	case sc == nil:
		t.Errorf("%s: no securityContext", where)
	default:
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot || sc.RunAsNonRoot == nil && !podNonRoot {
			t.Errorf("%s: runAsNonRoot is not true", where)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("%s: runAsUser 0", where)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem is not true", where)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation is not false", where)
		}
		if sc.Capabilities == nil || !deployContains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: capabilities do not drop ALL", where)
		}
	}
	for _, r := range []struct {
		kind string
		m    map[string]string
	}{{"requests", c.Resources.Requests}, {"limits", c.Resources.Limits}} {
		for _, res := range []string{"cpu", "memory"} {
			if r.m[res] == "" {
				t.Errorf("%s: resources.%s.%s is not set", where, r.kind, res)
			}
		}
	}
	if pod.Spec.Affinity == nil || pod.Spec.Affinity.PodAntiAffinity == nil {
		t.Errorf("%s: no podAntiAffinity: replicas may all land on one node", where)
	}

	// The Service reaches the pods' http and grpc ports, not the ops port.
	if svc.Spec.Type != "" && svc.Spec.Type != "ClusterIP" {
		t.Errorf("%s: Service %s is of type %s, want ClusterIP", rel, svc.Metadata.Name, svc.Spec.Type)
	}
	if !deploySelects(svc.serviceSelector, podLabels) {
		t.Errorf("%s: Service %s selector %v does not select the Deployment's pod labels %v", rel, svc.Metadata.Name, svc.serviceSelector, podLabels)
	}
	svcPorts := map[string]int{}
	for _, p := range svc.Spec.Ports {
		n, err := deployContainerPort(c, p.TargetPort)
		if p.TargetPort == nil {
			n, err = p.Port, nil
		}
		if err != nil {
			t.Errorf("%s: Service %s port %q: %v", rel, svc.Metadata.Name, p.Name, err)
		}
		svcPorts[p.Name] = n
		if n == opsPort {
			t.Errorf("%s: Service %s exposes the ops port %d (metrics, admin); keep it off the Service", rel, svc.Metadata.Name, n)
		}
	}
	for _, name := range []string{"http", "grpc"} {
		if got, ok := svcPorts[name]; !ok {
			t.Errorf("%s: Service %s has no port named %q", rel, svc.Metadata.Name, name)
		} else if got != portNamed[name] {
			t.Errorf("%s: Service %s port %q targets %d, but the container's %q port is %d", rel, svc.Metadata.Name, name, got, name, portNamed[name])
		}
	}

	// The PodDisruptionBudget covers the same pods.
	if pdb.Spec.Selector == nil || !deploySelects(pdb.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("%s: PodDisruptionBudget %s does not select the Deployment's pod labels %v", rel, pdb.Metadata.Name, podLabels)
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Errorf("%s: PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", rel, pdb.Metadata.Name)
	}
}

// deployK8sSecretCommand finds the "kubectl create secret generic NAME
// --from-literal=KEY=VALUE ..." command the manifest's comments tell the
// operator to run, and returns NAME and the values it would store.
func deployK8sSecretCommand(t *testing.T, rel string) (string, map[string]string) {
	t.Helper()
	var cmd strings.Builder
	for _, line := range strings.Split(deployRead(t, rel), "\n") {
		text, ok := strings.CutPrefix(strings.TrimSpace(line), "#")
		if !ok {
			continue
		}
		text = strings.TrimSpace(text)
		if cmd.Len() == 0 && !strings.Contains(text, "create secret generic") {
			continue
		}
		more := strings.HasSuffix(text, "\\")
		cmd.WriteString(strings.TrimSuffix(text, "\\") + " ")
		if !more {
			break
		}
	}
	m := regexp.MustCompile(`create secret generic (\S+)`).FindStringSubmatch(cmd.String())
	if m == nil {
		t.Fatalf("%s: the comments do not tell how to create the Secret (kubectl create secret generic NAME --from-literal=...)", rel)
	}
	data := map[string]string{}
	for _, lit := range regexp.MustCompile(`--from-literal=([A-Z_]+)=("[^"]*"|\S+)`).FindAllStringSubmatch(cmd.String(), -1) {
		data[lit[1]] = deployExpand(t, rel+": kubectl create secret "+lit[1], strings.Trim(lit[2], `"`))
	}
	return m[1], data
}

func TestDeployKubernetesRedisExample(t *testing.T) {
	const rel = "deploy/kubernetes/redis.yaml"
	objs := deployK8sDocs(t, rel)
	dep := deployFind(t, rel, objs, "Deployment")
	svc := deployFind(t, rel, objs, "Service")
	if dep.Spec.Template == nil || len(dep.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%s: Deployment %s: want a pod template with exactly one container", rel, dep.Metadata.Name)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if !strings.HasPrefix(c.Image, "redis:") {
		t.Errorf("%s: image %q, want redis:...", rel, c.Image)
	}
	for _, p := range []struct {
		name  string
		probe *k8sProbe
	}{{"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}} {
		if p.probe == nil || p.probe.Exec == nil || !strings.Contains(strings.Join(p.probe.Exec.Command, " "), "redis-cli ping") {
			t.Errorf("%s: %s should run redis-cli ping", rel, p.name)
		}
	}
	if c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("%s: memory requests and limits should be set", rel)
	}
	if !deploySelects(svc.serviceSelector, dep.Spec.Template.Metadata.Labels) {
		t.Errorf("%s: Service %s does not select the Redis pods", rel, svc.Metadata.Name)
	}
	if !strings.Contains(strings.ToLower(deployRead(t, rel)), "example") {
		t.Errorf("%s: should say it is an example", rel)
	}
}

// ---------------------------------------------------------------- Dockerfile

// deployDockerInstructions returns the Dockerfile's instructions (keyword
// upper-cased, continuation lines joined, comments dropped).
func deployDockerInstructions(src string) [][2]string {
	var out [][2]string
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		kw, rest, _ := strings.Cut(line, " ")
		out = append(out, [2]string{strings.ToUpper(kw), strings.TrimSpace(rest)})
	}
	for _, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	return out
}

func TestDeployDockerfile(t *testing.T) {
	const rel = "Dockerfile"
	src := deployRead(t, rel)
	ins := deployDockerInstructions(src)

	var froms []int
	for i, in := range ins {
		if in[0] == "FROM" {
			froms = append(froms, i)
		}
	}
	if len(froms) < 2 {
		t.Fatalf("%s: %d FROM lines, want a multi-stage build (2 or more)", rel, len(froms))
	}
	build, final := ins[:froms[len(froms)-1]], ins[froms[len(froms)-1]:]
	finalImage := strings.Fields(final[0][1])[0]
	if !strings.Contains(finalImage, "distroless") && finalImage != "scratch" {
		t.Errorf("%s: final stage FROM %s; want a distroless or scratch image", rel, finalImage)
	}

	// The Go image carries the go.mod version.
	goVersion := ""
	for _, line := range strings.Split(deployRead(t, "go.mod"), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			goVersion = strings.TrimSpace(v)
		}
	}
	for _, in := range build {
		if in[0] != "FROM" {
			continue
		}
		image := strings.Fields(in[1])[0]
		if tag, ok := strings.CutPrefix(image, "golang:"); ok {
			v, _, _ := strings.Cut(tag, "-")
			if !strings.HasPrefix(goVersion+".", v+".") {
				t.Errorf("%s: build stage FROM %s, but go.mod needs go %s", rel, image, goVersion)
			}
		}
	}

	cgoOff := false
	for _, in := range build {
		if (in[0] == "RUN" || in[0] == "ENV" || in[0] == "ARG") && strings.Contains(in[1], "CGO_ENABLED=0") {
			cgoOff = true
		}
	}
	if !cgoOff {
		t.Errorf("%s: the build stage does not set CGO_ENABLED=0; the binary would need libc, which %s lacks", rel, finalImage)
	}

	var user string
	var entrypoint, cmd []string
	exposed := map[string]bool{}
	for _, in := range final {
		switch in[0] {
		case "USER":
			user = in[1]
		case "EXPOSE":
			for _, p := range strings.Fields(in[1]) {
				p, _, _ = strings.Cut(p, "/")
				exposed[p] = true
			}
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(in[1]), &v); err != nil {
				t.Fatalf("%s: %s %s: want the exec (JSON array) form, so that pushgate is PID 1 and gets SIGTERM: %v", rel, in[0], in[1], err)
			}
			if in[0] == "ENTRYPOINT" {
				entrypoint = v
			} else {
				cmd = v
			}
		}
	}
	name, _, _ := strings.Cut(user, ":")
	switch name {
	case "":
		t.Errorf("%s: no USER in the final stage: the container would run as root", rel)
	case "root", "0":
		t.Errorf("%s: USER %s: the container would run as root", rel, user)
	}
	if len(entrypoint) == 0 {
		t.Fatalf("%s: no ENTRYPOINT in the final stage", rel)
	}

	// docker run IMAGE runs ENTRYPOINT + CMD.
	args := append(append([]string{}, entrypoint[1:]...), cmd...)
	where := rel + " ENTRYPOINT+CMD"
	cfg, _ := deployParse(t, where, args, nil)
	for _, l := range []struct{ flag, addr string }{{"--http-addr", cfg.HTTPAddr}, {"--grpc-addr", cfg.GRPCAddr}, {"--ops-addr", cfg.OpsAddr}} {
		if l.addr == "" {
			t.Errorf("%s: %s is not set", where, l.flag)
			continue
		}
		if config.LoopbackOnly(l.addr) {
			t.Errorf("%s: %s %s is loopback only: unreachable from outside the container", where, l.flag, l.addr)
		}
		if p := strconv.Itoa(deployPort(t, l.flag, l.addr)); !exposed[p] {
			t.Errorf("%s: %s %s, but port %s is not in EXPOSE", where, l.flag, l.addr, p)
		}
	}
	// Protected mode: refused without auth, as the Dockerfile says; starts
	// with the variables it documents.
	if err := deployProtectedMode(cfg); err == nil {
		t.Errorf("%s: expected protected mode to refuse the default arguments without auth", where)
	}
	documented := map[string]string{
		"PUSHGATE_AUTH":       "jwt",
		"PUSHGATE_JWT_SECRET": deployExpand(t, rel, "$(openssl rand -base64 48)"),
		"PUSHGATE_API_KEYS":   deployExpand(t, rel, "orders:$(openssl rand -hex 24)"),
	}
	for k := range documented {
		if !strings.Contains(src, k) {
			t.Errorf("%s: the comment should tell how to run it with %s", rel, k)
		}
	}
	cfg, _ = deployParse(t, where+" with "+strings.Join(deployKeys(documented), ", "), args, documented)
	if err := deployProtectedMode(cfg); err != nil {
		t.Errorf("%s: with PUSHGATE_AUTH, PUSHGATE_JWT_SECRET and PUSHGATE_API_KEYS set, pushgate would still refuse to start: %v", where, err)
	}

	ignore := deployRead(t, ".dockerignore")
	for _, p := range []string{".git", ".tools", "test-artifacts", "gateway/web/js/node_modules"} {
		if !deployContains(strings.Fields(ignore), p) {
			t.Errorf(".dockerignore: %s is not ignored", p)
		}
	}
}

func deployKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// ---------------------------------------------------------------- systemd

// deploySystemdUnit returns the [Service] settings of a unit file; a
// setting given more than once keeps every value.
func deploySystemdUnit(t *testing.T, rel string) map[string][]string {
	t.Helper()
	settings := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(deployRead(t, rel)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s:%d: not a key=value line: %q", rel, n, line)
			}
			if section == "Service" {
				settings[strings.TrimSpace(k)] = append(settings[strings.TrimSpace(k)], strings.TrimSpace(v))
			}
		}
	}
	return settings
}

// deploySystemdSpan parses a systemd time span such as 45s, 45, 1min 30s.
func deploySystemdSpan(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	r := strings.NewReplacer(" ", "", "min", "m", "sec", "s", "hours", "h", "hour", "h", "hr", "h")
	return time.ParseDuration(r.Replace(s))
}

// deployEnvFile reads KEY=VALUE lines (# comments) as systemd's
// EnvironmentFile does for simple values.
func deployEnvFile(t *testing.T, rel string) map[string]string {
	t.Helper()
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(deployRead(t, rel)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s:%d: not a KEY=VALUE line: %q", rel, n, line)
		}
		env[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return env
}

// deploySystemdConfig parses the unit's ExecStart with the example config
// and environment files from deploy/systemd in place of /etc/pushgate.
func deploySystemdConfig(t *testing.T) (config.Config, *flag.FlagSet, map[string][]string, map[string]string, string) {
	t.Helper()
	const unitRel = "deploy/systemd/pushgate.service"
	const yamlRel = "deploy/systemd/pushgate.yaml"
	const envRel = "deploy/systemd/pushgate.env.example"
	unit := deploySystemdUnit(t, unitRel)

	exec := unit["ExecStart"]
	if len(exec) != 1 {
		t.Fatalf("%s: want exactly one ExecStart, got %q", unitRel, exec)
	}
	cmdline := strings.TrimLeft(exec[0], "@-:+!|")
	if strings.ContainsAny(cmdline, `"'$%\`) {
		t.Fatalf("%s: ExecStart %q uses quoting or specifiers this test does not expand; keep it plain", unitRel, exec[0])
	}
	fields := strings.Fields(cmdline)
	if len(fields) == 0 || !filepath.IsAbs(fields[0]) || filepath.Base(fields[0]) != "pushgate" {
		t.Fatalf("%s: ExecStart %q does not run an absolute path to pushgate", unitRel, exec[0])
	}

	// --config /etc/pushgate/pushgate.yaml reads the example file here.
	yamlPath := filepath.Join(deployRoot(t), yamlRel)
	args := append([]string{}, fields[1:]...)
	configs := 0
	for i := 0; i < len(args); i++ {
		var value *string
		switch a := args[i]; {
		case a == "--config" || a == "-config":
			if i+1 < len(args) {
				value = &args[i+1]
				i++
			}
		case strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config="):
			name, v, _ := strings.Cut(a, "=")
			if filepath.Base(v) != filepath.Base(yamlRel) {
				t.Fatalf("%s: ExecStart reads %s, but the example file is %s", unitRel, v, yamlRel)
			}
			args[i] = name + "=" + yamlPath
			configs++
			continue
		}
		if value != nil {
			if filepath.Base(*value) != filepath.Base(yamlRel) {
				t.Fatalf("%s: ExecStart reads %s, but the example file is %s", unitRel, *value, yamlRel)
			}
			*value = yamlPath
			configs++
		}
	}
	if configs != 1 {
		t.Fatalf("%s: ExecStart %q should name the config file once with --config", unitRel, exec[0])
	}

	envFiles := unit["EnvironmentFile"]
	if len(envFiles) != 1 || filepath.Base(strings.TrimPrefix(envFiles[0], "-"))+".example" != filepath.Base(envRel) {
		t.Fatalf("%s: want one EnvironmentFile=.../pushgate.env (with %s as its example), got %q", unitRel, envRel, envFiles)
	}
	shipped := deployEnvFile(t, envRel)
	deployCheckEnvNames(t, envRel, shipped)
	env := deploySystemdGenerate(t, envRel, shipped)
	deployRefusesPlaceholders(t, unitRel+" ExecStart with "+yamlRel+" and "+envRel+" as shipped", args, shipped, env)

	cfg, fs := deployParse(t, unitRel+" ExecStart with "+yamlRel+" and "+envRel+" (secrets generated as it says)", args, env)
	if cfg.ConfigFile != yamlPath {
		t.Fatalf("%s: the config file was not used: --config is %q, want %q", unitRel, cfg.ConfigFile, yamlPath)
	}
	return cfg, fs, unit, env, yamlPath
}

// deploySystemdGenerate applies to env the sed command the example file's
// comments give for generating its secrets (s|^VAR=.*|VAR=VALUE|), with
// its $(openssl rand …) run, and fails for a secret it leaves out.
func deploySystemdGenerate(t *testing.T, rel string, shipped map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for k, v := range shipped {
		env[k] = v
	}
	generated := map[string]bool{}
	for _, m := range regexp.MustCompile(`s\|\^([A-Z_]+)=\.\*\|([A-Z_]+)=([^|]*)\|`).FindAllStringSubmatch(deployRead(t, rel), -1) {
		if m[1] != m[2] {
			t.Errorf("%s: the sed command replaces %s with %s", rel, m[1], m[2])
		}
		if _, ok := env[m[1]]; !ok {
			t.Errorf("%s: the sed command sets %s, which the file does not have", rel, m[1])
		}
		env[m[1]] = deployExpand(t, rel+": "+m[1], m[3])
		generated[m[1]] = true
	}
	for _, k := range deploySecretVars {
		if _, ok := shipped[k]; ok && !generated[k] {
			t.Errorf("%s: %s is set, but the comments do not say how to generate it", rel, k)
		}
	}
	return env
}

func TestDeploySystemd(t *testing.T) {
	const unitRel = "deploy/systemd/pushgate.service"
	const yamlRel = "deploy/systemd/pushgate.yaml"

	// The example file on its own: every key is a flag.
	_, fresh, _ := config.Load(nil, func(string) string { return "" }, io.Discard)
	yamlPath := filepath.Join(deployRoot(t), yamlRel)
	if err := config.ApplyFile(fresh, yamlPath); err != nil {
		t.Fatalf("%s does not load: %v", yamlRel, err)
	}

	cfg, fs, unit, env, _ := deploySystemdConfig(t)
	where := unitRel + " ExecStart"

	// What the file says is what pushgate runs with, unless the environment
	// overrides it.
	var m map[string]any
	if err := yaml.Unmarshal([]byte(deployRead(t, yamlRel)), &m); err != nil {
		t.Fatalf("%s: %v", yamlRel, err)
	}
	if len(m) == 0 {
		t.Fatalf("%s: sets nothing", yamlRel)
	}
	for k := range m {
		if env[config.EnvName(k)] != "" {
			continue
		}
		if got, want := fs.Lookup(k).Value.String(), fresh.Lookup(k).Value.String(); got != want {
			t.Errorf("%s: %s is %q, but %s says %q", where, k, got, yamlRel, want)
		}
	}

	if err := deployProtectedMode(cfg); err != nil {
		t.Errorf("%s: pushgate would refuse to start: %v", where, err)
	}
	if cfg.Auth != "jwt" || cfg.APIKeys == "" {
		t.Errorf("%s: client auth (jwt) and API keys should be on even behind a proxy on loopback; got auth %q, api keys set %v", where, cfg.Auth, cfg.APIKeys != "")
	}

	// systemd waits long enough for the drain.
	stop := unit["TimeoutStopSec"]
	if len(stop) != 1 {
		t.Fatalf("%s: want one TimeoutStopSec (the default 90s may be shorter or longer than needed), got %q", unitRel, stop)
	}
	d, err := deploySystemdSpan(stop[0])
	if err != nil {
		t.Fatalf("%s: TimeoutStopSec=%s: %v", unitRel, stop[0], err)
	}
	if d <= deployWorstStop(cfg) {
		t.Errorf("%s: TimeoutStopSec=%s is too short: %s, and systemd must wait longer", unitRel, stop[0], deployStopArithmetic(cfg))
	}
	for _, k := range []string{"KillSignal"} {
		if v := unit[k]; len(v) > 0 && v[len(v)-1] != "SIGTERM" && v[len(v)-1] != "SIGINT" {
			t.Errorf("%s: %s=%s; pushgate drains on SIGTERM or SIGINT only", unitRel, k, v[len(v)-1])
		}
	}
	for k, want := range map[string]string{
		"DynamicUser":     "yes",
		"NoNewPrivileges": "yes",
		"PrivateTmp":      "yes",
		"ProtectSystem":   "strict",
		"Restart":         "on-failure",
		"LimitNOFILE":     "1048576",
	} {
		if v := unit[k]; len(v) == 0 || v[len(v)-1] != want {
			t.Errorf("%s: want %s=%s, got %q", unitRel, k, want, v)
		}
	}
}

// ---------------------------------------------------------------- nginx

// deployNginxDirectives returns every value of a directive (comments
// dropped).
func deployNginxDirectives(conf, name string) []string {
	re := regexp.MustCompile(`(?m)(?:^|[\s{;])` + regexp.QuoteMeta(name) + `\s+([^;]*);`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(conf, -1) {
		out = append(out, strings.TrimSpace(m[1]))
	}
	return out
}

// deployNginxTime parses an nginx time such as 75s, 75 (seconds), 2m, 1h.
func deployNginxTime(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	if v, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(v)
		return time.Duration(n) * 24 * time.Hour, err
	}
	return time.ParseDuration(s)
}

func TestDeployNginx(t *testing.T) {
	const rel = "deploy/nginx/pushgate.conf"
	var b strings.Builder
	for _, line := range strings.Split(deployRead(t, rel), "\n") {
		line, _, _ = strings.Cut(line, "#")
		b.WriteString(line + "\n")
	}
	conf := b.String()

	// Idle WebSockets survive the proxy: it hears from pushgate (a ping) at
	// least every heartbeat interval, and from a live client (the pong)
	// within the heartbeat timeout after that.
	def, err := config.Parse(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("the default configuration does not validate: %v", err)
	}
	sys, _, _, _, _ := deploySystemdConfig(t)
	need := def.HeartbeatInterval + def.HeartbeatTimeout
	if s := sys.HeartbeatInterval + sys.HeartbeatTimeout; s > need {
		need = s
	}
	for _, name := range []string{"proxy_read_timeout", "proxy_send_timeout"} {
		values := deployNginxDirectives(conf, name)
		if len(values) == 0 && name == "proxy_read_timeout" {
			t.Errorf("%s: no proxy_read_timeout: nginx's default 60s is too close to the heartbeat (%v + %v)", rel, def.HeartbeatInterval, def.HeartbeatTimeout)
		}
		for _, v := range values {
			d, err := deployNginxTime(v)
			if err != nil {
				t.Errorf("%s: %s %s: %v", rel, name, v, err)
			} else if d <= need {
				t.Errorf("%s: %s %s would cut idle WebSockets: it must be longer than heartbeat-interval + heartbeat-timeout = %v", rel, name, v, need)
			}
		}
	}

	for _, want := range []struct{ re, msg string }{
		{`proxy_http_version\s+1\.1\s*;`, "proxy_http_version 1.1 (WebSockets need HTTP/1.1 to the upstream)"},
		{`proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;`, "proxy_set_header Upgrade $http_upgrade"},
		{`proxy_set_header\s+Connection\s+\$connection_upgrade\s*;`, "proxy_set_header Connection $connection_upgrade"},
		{`map\s+\$http_upgrade\s+\$connection_upgrade\s*\{`, "map $http_upgrade $connection_upgrade"},
		{`proxy_set_header\s+X-Forwarded-For\s+`, "proxy_set_header X-Forwarded-For"},
		{`proxy_buffering\s+off\s*;`, "proxy_buffering off"},
		{`location\s+/ws\s*\{`, "location /ws"},
		{`grpc_pass\s+grpcs?://`, "grpc_pass grpc://..."},
		{`grpc_read_timeout\s+`, "grpc_read_timeout (WatchEvents streams are long)"},
		{`http2`, "HTTP/2 for the gRPC server"},
	} {
		if !regexp.MustCompile(want.re).MatchString(conf) {
			t.Errorf("%s: missing %s", rel, want.msg)
		}
	}

	// Upstreams point at the listeners of the systemd example, and nothing
	// is proxied to the ops listener.
	upstreams := map[string][]string{}
	for _, m := range regexp.MustCompile(`upstream\s+(\S+)\s*\{([^}]*)\}`).FindAllStringSubmatch(conf, -1) {
		upstreams[m[1]] = deployNginxDirectives(m[2], "server")
	}
	targets := func(directive string) []string {
		var out []string
		for _, v := range deployNginxDirectives(conf, directive) {
			_, hostport, ok := strings.Cut(v, "://")
			if !ok {
				t.Errorf("%s: %s %s: want scheme://address", rel, directive, v)
				continue
			}
			hostport, _, _ = strings.Cut(hostport, "/")
			if servers, ok := upstreams[hostport]; ok {
				for _, s := range servers {
					out = append(out, strings.Fields(s)[0])
				}
			} else {
				out = append(out, hostport)
			}
		}
		return out
	}
	for _, p := range []struct {
		directive, flag, addr string
	}{{"proxy_pass", "--http-addr", sys.HTTPAddr}, {"grpc_pass", "--grpc-addr", sys.GRPCAddr}} {
		ts := targets(p.directive)
		if len(ts) == 0 {
			t.Errorf("%s: no %s", rel, p.directive)
		}
		for _, target := range ts {
			if target != p.addr {
				t.Errorf("%s: %s goes to %s, but deploy/systemd/pushgate.yaml has %s %s", rel, p.directive, target, p.flag, p.addr)
			}
		}
	}
	if sys.OpsAddr != "" {
		for _, target := range append(targets("proxy_pass"), targets("grpc_pass")...) {
			if target == sys.OpsAddr {
				t.Errorf("%s: proxies to the ops listener %s (metrics, admin); keep it off the public server", rel, sys.OpsAddr)
			}
		}
	}
	if regexp.MustCompile(`location\s+[=^~]*\s*/(metrics|admin)`).MatchString(conf) &&
		!regexp.MustCompile(`location\s+~[^{]*(metrics|admin)[^{]*\{\s*return\s+40[34]`).MatchString(conf) {
		t.Errorf("%s: has a location for /metrics or /admin that is not a refusal", rel)
	}
}

func deployContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
