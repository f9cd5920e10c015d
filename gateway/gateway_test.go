package gateway

import (
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestNewIDIsUniqueAndSorted(t *testing.T) {
	const workers, per = 8, 5000
	out := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				out[w] = append(out[w], NewID())
			}
		}()
	}
	wg.Wait()
	seen := make(map[string]bool, workers*per)
	for _, ids := range out {
		// Within one goroutine ids come out in order.
		if !slices.IsSorted(ids) {
			t.Fatal("ids from one goroutine are not increasing")
		}
		for _, id := range ids {
			if len(id) != 26 || strings.Trim(id, crockford) != "" {
				t.Fatalf("malformed id %q", id)
			}
			if seen[id] {
				t.Fatalf("duplicate id %s", id)
			}
			seen[id] = true
		}
	}
}

func TestIsPing(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"ping", true},
		{" ping\n", true},
		{`{"type":"ping"}`, true},
		{`{ "type" : "ping", "ts": 1 }`, true},
		{"PING", false},
		{"pingpong", false},
		{`{"type":"pong"}`, false},
		{`{"type":"ping"`, false},
		{`{"data":"ping"}`, false},
		{"", false},
		{`{"type":"ping","pad":"` + strings.Repeat("x", 100) + `"}`, false},
	} {
		if got := isPing([]byte(tc.in)); got != tc.want {
			t.Errorf("isPing(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func FuzzIsPing(f *testing.F) {
	for _, s := range []string{"ping", `{"type":"ping"}`, "", "{", "\xff\xfe", `{"type":"ping","x":[1,2,{"y":null}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		_ = isPing(p) // must not panic, whatever the client sends
	})
}

func TestValidUserID(t *testing.T) {
	for _, ok := range []string{"merchant-42", "用户1", "a b", "x@y.z", strings.Repeat("a", 128)} {
		if err := ValidUserID(ok, 128); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("a", 129), "a\nb", "a\x00", "\xff", "tab\there", "\u200b"} {
		if err := ValidUserID(bad, 128); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
