package config

import (
	"io"
	"strings"
	"testing"
)

// TestTracingFlags: tracing is off by default (no endpoint, grpc, every
// root call sampled once on); bad values are refused naming the flag, and
// the environment variable when it set them.
func TestTracingFlags(t *testing.T) {
	c, err := Parse(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.OTLPEndpoint != "" || c.OTLPProtocol != "grpc" || c.TraceSampleRatio != 1 {
		t.Errorf("defaults: endpoint %q, protocol %q, ratio %v; want \"\", grpc, 1", c.OTLPEndpoint, c.OTLPProtocol, c.TraceSampleRatio)
	}
	c, err = Parse([]string{"--otlp-endpoint", "https://collector:4318", "--otlp-protocol", "http", "--trace-sample-ratio", "0.25"},
		func(string) string { return "" }, io.Discard)
	if err != nil || c.OTLPEndpoint != "https://collector:4318" || c.OTLPProtocol != "http" || c.TraceSampleRatio != 0.25 {
		t.Errorf("good values: %+v, %v", c, err)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{[]string{"--otlp-protocol", "grpcs"}, nil, []string{`--otlp-protocol must be grpc or http, got "grpcs"`}},
		{nil, map[string]string{"PUSHGATE_OTLP_PROTOCOL": "udp"}, []string{`--otlp-protocol must be grpc or http, got "udp"`, "PUSHGATE_OTLP_PROTOCOL"}},
		{[]string{"--trace-sample-ratio", "1.5"}, nil, []string{"--trace-sample-ratio must be between 0 and 1, got 1.5"}},
		{[]string{"--trace-sample-ratio", "-0.1"}, nil, []string{"--trace-sample-ratio must be between 0 and 1"}},
		{[]string{"--otlp-endpoint", "collector:4317"}, nil, []string{`--otlp-endpoint must be an http:// or https:// URL such as http://collector:4317, got "collector:4317"`}},
		{[]string{"--otlp-endpoint", "http://"}, nil, []string{"--otlp-endpoint must be an http:// or https:// URL"}},
	} {
		_, err := Parse(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
		if err == nil {
			t.Errorf("%v %v: accepted", tc.args, tc.env)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v %v: error %q does not say %q", tc.args, tc.env, err, w)
			}
		}
	}
}
