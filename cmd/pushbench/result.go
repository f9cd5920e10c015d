package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Result is one run's numbers.
type Result struct {
	Scenario      string  `json:"scenario"`
	Target        string  `json:"target"`
	Conns         int     `json:"conns"`
	Procs         int     `json:"procs"`
	Payload       int     `json:"payload_bytes"`
	Envelope      bool    `json:"envelope"`
	Rate          float64 `json:"rate"`
	Connected     int     `json:"connected"`
	ConnectFailed int     `json:"connect_failed"`
	ConnectMS     int64   `json:"connect_ms"`

	Sent             int         `json:"sent"`
	CallErrors       int         `json:"call_errors"`
	Delivered        int64       `json:"delivered"`
	Lost             int64       `json:"lost"`
	Duplicates       int64       `json:"duplicates"`
	DeliveriesPerSec float64     `json:"deliveries_per_sec"`
	CallLatency      Percentiles `json:"call_latency_us"`
	Latency          Percentiles `json:"latency_us"`            // call to frame, per delivery
	LastFrameLatency Percentiles `json:"last_frame_latency_us"` // call to the last frame, per broadcast

	StormBackMS int64 `json:"storm_back_ms,omitempty"`
	StormFailed int   `json:"storm_failed,omitempty"`

	ServerRSSBytes    int64   `json:"server_rss_bytes,omitempty"`
	ServerRSSPerConn  float64 `json:"server_rss_per_conn_bytes,omitempty"`
	ServerCPUPerSec   float64 `json:"server_cpu_seconds_per_second,omitempty"` // during the send phase and the wait for deliveries
	ServerCPUPerFrame float64 `json:"server_cpu_us_per_delivery,omitempty"`    // the same CPU time divided by the frames delivered
}

// Percentiles of a latency sample, microseconds.
type Percentiles struct {
	N   int   `json:"n"`
	P50 int32 `json:"p50"`
	P90 int32 `json:"p90"`
	P99 int32 `json:"p99"`
	Max int32 `json:"max"`
}

func percentiles(v []int32) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(q float64) int32 { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return Percentiles{N: len(s), P50: at(.5), P90: at(.9), P99: at(.99), Max: s[len(s)-1]}
}

// procSample is a process's memory and CPU time at one moment.
type procSample struct {
	rss int64   // bytes
	cpu float64 // seconds, user + system
	ok  bool
}

func sampleProc(pid int) procSample {
	if pid <= 0 {
		return procSample{}
	}
	var s procSample
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
				s.rss = kb << 10
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name (which may hold spaces): utime is
		// the 14th field, stime the 15th, in clock ticks (100 per second).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) > 12 {
			ut, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			s.cpu = (ut + st) / 100
			s.ok = true
		}
	}
	return s
}

func (r *Result) server(before, now procSample) {
	if !now.ok {
		return
	}
	r.ServerRSSBytes = now.rss
	if r.Connected > 0 {
		r.ServerRSSPerConn = float64(now.rss-before.rss) / float64(r.Connected)
	}
}

func (r *Result) table(w io.Writer) {
	proto := map[bool]string{true: "envelope", false: "raw"}[r.Envelope]
	if r.Target == "centrifugo" {
		proto = "centrifugo"
	}
	fmt.Fprintf(w, "scenario %s: %d connections (%d connected, %d failed, in %d ms) over %d process(es), payload %d B, %s\n",
		r.Scenario, r.Conns, r.Connected, r.ConnectFailed, r.ConnectMS, r.Procs, r.Payload, proto)
	if r.Sent > 0 {
		fmt.Fprintf(w, "sent %d (%d call errors) at %.0f/s: delivered %d, lost %d, duplicates %d, %.0f deliveries/s\n",
			r.Sent, r.CallErrors, r.Rate, r.Delivered, r.Lost, r.Duplicates, r.DeliveriesPerSec)
		row := func(name string, p Percentiles) {
			if p.N > 0 {
				fmt.Fprintf(w, "  %-28s n=%-8d p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms  max %8.2f ms\n", name, p.N,
					float64(p.P50)/1000, float64(p.P90)/1000, float64(p.P99)/1000, float64(p.Max)/1000)
			}
		}
		row("gRPC call", r.CallLatency)
		row("call to frame (per delivery)", r.Latency)
		row("call to last frame", r.LastFrameLatency)
	}
	if r.Scenario == "storm" {
		fmt.Fprintf(w, "storm: all back in %d ms, %d failed\n", r.StormBackMS, r.StormFailed)
	}
	if r.ServerRSSBytes > 0 {
		fmt.Fprintf(w, "server: RSS %.1f MiB, %.1f KiB per connection, CPU %.2f s/s, %.2f µs per delivery\n",
			float64(r.ServerRSSBytes)/(1<<20), r.ServerRSSPerConn/1024, r.ServerCPUPerSec, r.ServerCPUPerFrame)
	}
}
