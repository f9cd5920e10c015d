package main

// Checks of the Helm chart (deploy/helm/pushgate): helm lint, and helm
// template rendered with several sets of values, each checked against the
// real flag set as the Kubernetes manifest is (deploy_test.go): the
// arguments and environment parse and pass protected mode, probes and
// ports match the listeners, and the grace period covers the preStop sleep
// and pushgate's whole shutdown.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"pushgate/internal/config"
)

const helmChart = "deploy/helm/pushgate"

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBinary is .tools/bin/helm, built by make on first use (HELM_VERSION
// in the Makefile) and kept for later runs.
func helmBinary(t *testing.T) string {
	t.Helper()
	root := deployRoot(t)
	helmOnce.Do(func() {
		helmPath = filepath.Join(root, ".tools", "bin", "helm")
		if _, err := os.Stat(helmPath); err == nil {
			return
		}
		if _, err := exec.LookPath("make"); err != nil {
			helmErr = err
			return
		}
		out, err := exec.Command("make", "-C", root, helmPath).CombinedOutput()
		if err != nil {
			helmErr = fmt.Errorf("building helm: %v\n%s", err, out)
		}
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

// helmRun runs helm with args in the repository root.
func helmRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), args...)
	cmd.Dir = deployRoot(t)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// helmObject is a rendered object, typed (k8sObject) and as a plain map
// for the fields k8sObject does not hold.
type helmObject struct {
	k8sObject
	raw map[string]any
}

func helmRender(t *testing.T, sets ...string) ([]helmObject, error) {
	t.Helper()
	args := []string{"template", "pg", helmChart, "--namespace", "push"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := helmRun(t, args...)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(strings.NewReader(out))
	var objs []helmObject
	for {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template %v: not YAML: %v\n%s", sets, err, out)
		}
		if len(node.Content) == 0 || node.Content[0].Kind == yaml.ScalarNode {
			continue
		}
		var o helmObject
		if err := node.Decode(&o.k8sObject); err != nil {
			t.Fatalf("helm template %v: %v", sets, err)
		}
		if err := node.Decode(&o.raw); err != nil {
			t.Fatalf("helm template %v: %v", sets, err)
		}
		if o.Kind == "Service" {
			o.serviceSelector = map[string]string{}
			for k, v := range helmDig(o.raw, "spec", "selector").(map[string]any) {
				o.serviceSelector[k] = fmt.Sprint(v)
			}
		}
		objs = append(objs, o)
	}
	return objs, nil
}

// helmDig follows keys (and list indexes) through nested maps; nil when a
// step is missing.
func helmDig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func helmKinds(objs []helmObject) map[string]*helmObject {
	kinds := map[string]*helmObject{}
	for i := range objs {
		kinds[objs[i].Kind] = &objs[i]
	}
	return kinds
}

func TestHelmLint(t *testing.T) {
	for _, sets := range [][]string{nil, {"engine=redis", "replicaCount=3"}, {"engine=redis", "autoscaling.enabled=true"}} {
		args := []string{"lint", "--strict", helmChart}
		for _, s := range sets {
			args = append(args, "--set", s)
		}
		if out, err := helmRun(t, args...); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}
}

func TestHelmTemplate(t *testing.T) {
	secretName, secretData := deployK8sSecretCommand(t, helmChart+"/values.yaml")
	for _, tc := range []struct {
		name       string
		sets       []string
		engine     string
		replicas   int // 0: the HPA decides
		hpa        bool
		preStop    int
		wantArgs   []string
		wantEngine func(config.Config) error
	}{
		{name: "defaults: memory engine, one pod", engine: "memory", replicas: 1, preStop: 5},
		{name: "redis engine, three pods", sets: []string{"engine=redis", "replicaCount=3"}, engine: "redis", replicas: 3, preStop: 5,
			wantArgs: []string{"--redis-url=redis://pushgate-redis:6379/0"}},
		{name: "redis engine with an HPA", sets: []string{"engine=redis", "autoscaling.enabled=true", "autoscaling.minReplicas=3"},
			engine: "redis", hpa: true, preStop: 5},
		{name: "longer drain, no preStop, extra flags", sets: []string{"engine=redis", "replicaCount=2", "shutdown.drainWindow=60",
			"shutdown.preStopSleep=0", "shutdown.shutdownDelay=10", "extraArgs={--heartbeat-interval=15s,--max-connections=50000}"},
			engine: "redis", replicas: 2, preStop: 0, wantArgs: []string{"--heartbeat-interval=15s", "--max-connections=50000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := helmRender(t, tc.sets...)
			if err != nil {
				t.Fatal(err)
			}
			kinds := helmKinds(objs)
			dep, svc, pdb := kinds["Deployment"], kinds["Service"], kinds["PodDisruptionBudget"]
			if dep == nil || svc == nil || pdb == nil {
				t.Fatalf("rendered %d objects; want a Deployment, a Service and a PodDisruptionBudget", len(objs))
			}
			for _, o := range objs {
				if o.Kind == "Secret" {
					t.Errorf("the chart renders Secret %s; its values would be everyone's", o.Metadata.Name)
				}
			}
			if dep.Spec.Template == nil || len(dep.Spec.Template.Spec.Containers) != 1 {
				t.Fatal("want a pod template with one container")
			}
			pod := dep.Spec.Template
			c := pod.Spec.Containers[0]
			where := "helm template " + strings.Join(tc.sets, " ")

			// Environment: the Secret as documented (envFrom), and the
			// pod name as the node name.
			env := map[string]string{}
			for _, e := range c.Env {
				switch {
				case e.Value != nil:
					env[e.Name] = *e.Value
				case e.Name == "PUSHGATE_NODE_NAME":
					env[e.Name] = "pg-pushgate-7c9d-x2k4"
				default:
					t.Errorf("%s: env %s has no value", where, e.Name)
				}
			}
			if ref := helmDig(dep.raw, "spec", "template", "spec", "containers", 0, "envFrom", 0, "secretRef", "name"); ref != secretName {
				t.Errorf("%s: envFrom secretRef is %v, but values.yaml documents the Secret %q", where, ref, secretName)
			}
			for k, v := range secretData {
				env[k] = v
			}
			deployCheckEnvNames(t, where, env)

			cfg, _ := deployParse(t, where, c.Args, env)
			if err := deployProtectedMode(cfg); err != nil {
				t.Errorf("%s: pushgate would refuse to start: %v", where, err)
			}
			if cfg.Engine != tc.engine {
				t.Errorf("%s: --engine %s, want %s", where, cfg.Engine, tc.engine)
			}
			if cfg.NodeName != env["PUSHGATE_NODE_NAME"] {
				t.Errorf("%s: node name %q, want the pod's name", where, cfg.NodeName)
			}
			for _, a := range tc.wantArgs {
				if !deployContains(c.Args, a) {
					t.Errorf("%s: args %q lack %s", where, c.Args, a)
				}
			}

			// Replicas, strategy and the HPA.
			switch {
			case tc.hpa:
				if dep.Spec.Replicas != nil {
					t.Errorf("%s: the Deployment sets replicas, which fights the HPA", where)
				}
				hpa := kinds["HorizontalPodAutoscaler"]
				if hpa == nil {
					t.Fatalf("%s: no HorizontalPodAutoscaler", where)
				}
				if n := helmDig(hpa.raw, "spec", "scaleTargetRef", "name"); n != dep.Metadata.Name {
					t.Errorf("%s: the HPA scales %v, not the Deployment %s", where, n, dep.Metadata.Name)
				}
				if m, _ := helmDig(hpa.raw, "spec", "minReplicas").(int); m < 2 {
					t.Errorf("%s: HPA minReplicas %v", where, helmDig(hpa.raw, "spec", "minReplicas"))
				}
			default:
				if kinds["HorizontalPodAutoscaler"] != nil {
					t.Errorf("%s: an HPA without autoscaling.enabled", where)
				}
				if dep.Spec.Replicas == nil || *dep.Spec.Replicas != tc.replicas {
					t.Errorf("%s: replicas %v, want %d", where, dep.Spec.Replicas, tc.replicas)
				}
			}
			strategy := helmDig(dep.raw, "spec", "strategy", "type")
			if tc.engine == "memory" && strategy != "Recreate" {
				t.Errorf("%s: memory engine with strategy %v: two pods would each hold part of the state during a rollout", where, strategy)
			}
			if tc.engine == "redis" && strategy != "RollingUpdate" {
				t.Errorf("%s: redis engine with strategy %v", where, strategy)
			}

			// Ports and probes, as for the manifest.
			portNamed := map[string]int{}
			for _, p := range c.Ports {
				portNamed[p.Name] = p.ContainerPort
			}
			for _, l := range []struct{ name, flag, addr string }{
				{"http", "--http-addr", cfg.HTTPAddr}, {"grpc", "--grpc-addr", cfg.GRPCAddr}, {"ops", "--ops-addr", cfg.OpsAddr},
			} {
				if got := portNamed[l.name]; got != deployPort(t, l.flag, l.addr) {
					t.Errorf("%s: container port %q is %d, but %s is %s", where, l.name, got, l.flag, l.addr)
				}
				if config.LoopbackOnly(l.addr) {
					t.Errorf("%s: %s %s is loopback only", where, l.flag, l.addr)
				}
			}
			opsPort := deployPort(t, "--ops-addr", cfg.OpsAddr)
			for _, p := range []struct {
				name  string
				probe *k8sProbe
				path  string
			}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}, {"startupProbe", c.StartupProbe, "/healthz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Errorf("%s: no %s", where, p.name)
					continue
				}
				port, err := deployContainerPort(c, p.probe.HTTPGet.Port)
				if p.probe.HTTPGet.Path != p.path || err != nil || port != opsPort {
					t.Errorf("%s: %s is %s on port %v (%v), want %s on the ops port %d", where, p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port, err, p.path, opsPort)
				}
			}
			if ann := pod.Metadata.Annotations; ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(opsPort) {
				t.Errorf("%s: prometheus annotations %v, want scrape on port %d", where, ann, opsPort)
			}

			// Shutdown: the preStop sleep runs before SIGTERM, inside the
			// grace period, then pushgate's own sequence.
			preStop := helmDig(dep.raw, "spec", "template", "spec", "containers", 0, "lifecycle", "preStop", "sleep", "seconds")
			switch {
			case tc.preStop == 0 && preStop != nil:
				t.Errorf("%s: a preStop sleep of %v with shutdown.preStopSleep=0", where, preStop)
			case tc.preStop > 0 && preStop != tc.preStop:
				t.Errorf("%s: preStop sleep %v, want %d", where, preStop, tc.preStop)
			}
			worst := time.Duration(tc.preStop)*time.Second + deployWorstStop(cfg)
			if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= worst {
				t.Errorf("%s: terminationGracePeriodSeconds %v does not cover preStop %ds + %s", where, g, tc.preStop, deployStopArithmetic(cfg))
			}
			if cfg.ShutdownDelay <= 0 {
				t.Errorf("%s: no --shutdown-delay", where)
			}

			// Security.
			if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !deployContains(sc.Capabilities.Drop, "ALL") ||
				sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
				t.Errorf("%s: container securityContext is not read-only, non-root, without privilege escalation and capabilities", where)
			}

			// Service and PDB select the pods; the Service leaves out ops.
			podLabels := pod.Metadata.Labels
			if dep.Spec.Selector == nil || !deploySelects(dep.Spec.Selector.MatchLabels, podLabels) {
				t.Errorf("%s: the Deployment's selector does not select its pods", where)
			}
			if !deploySelects(svc.serviceSelector, podLabels) {
				t.Errorf("%s: Service selector %v does not select the pods %v", where, svc.serviceSelector, podLabels)
			}
			svcPorts := map[string]int{}
			for _, p := range svc.Spec.Ports {
				n, err := deployContainerPort(c, p.TargetPort)
				if err != nil {
					t.Errorf("%s: Service port %s: %v", where, p.Name, err)
				}
				if n == opsPort {
					t.Errorf("%s: the Service exposes the ops port", where)
				}
				svcPorts[p.Name] = n
			}
			if svcPorts["http"] != portNamed["http"] || svcPorts["grpc"] != portNamed["grpc"] {
				t.Errorf("%s: Service ports %v, container ports %v", where, svcPorts, portNamed)
			}
			if pdb.Spec.Selector == nil || !deploySelects(pdb.Spec.Selector.MatchLabels, podLabels) || pdb.Spec.MaxUnavailable == nil {
				t.Errorf("%s: the PodDisruptionBudget does not cover the pods with a maxUnavailable", where)
			}
		})
	}
}

// Values that do not go together stop helm template with a reason, and a
// flag pushgate does not know, passed through extraArgs, fails the same
// parse check as the manifests.
func TestHelmTemplateRefuses(t *testing.T) {
	for _, tc := range []struct {
		sets []string
		want string
	}{
		{[]string{"replicaCount=2"}, "engine memory keeps presence and inboxes in one pod"},
		{[]string{"autoscaling.enabled=true"}, "engine memory keeps presence and inboxes in one pod"},
		{[]string{"engine=etcd"}, `engine must be memory or redis, got "etcd"`},
		{[]string{"existingSecret="}, "existingSecret"},
	} {
		_, err := helmRender(t, tc.sets...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("helm template --set %s: err = %v, want %q", strings.Join(tc.sets, ","), err, tc.want)
		}
	}
	objs, err := helmRender(t, "extraArgs={--heartbeat-interval=5}")
	if err != nil {
		t.Fatal(err)
	}
	c := helmKinds(objs)["Deployment"].Spec.Template.Spec.Containers[0]
	_, _, err = config.Load(c.Args, func(string) string { return "" }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--heartbeat-interval") {
		t.Errorf("extraArgs --heartbeat-interval=5: parse err = %v, want it refused", err)
	}
}
