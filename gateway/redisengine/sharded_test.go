package redisengine

import (
	"fmt"
	"testing"
)

// ShardOf spreads ids evenly, is stable, and going from n to n+1 shards
// moves about 1/(n+1) of the ids, every one of them to the new shard.
func TestShardOfSpreadsAndMovesLittle(t *testing.T) {
	const ids = 100000
	for n := 1; n <= 8; n++ {
		count := make([]int, n+1)
		moved := 0
		for i := range ids {
			id := fmt.Sprintf("user-%d", i)
			a, b := ShardOf(id, n), ShardOf(id, n+1)
			if a != ShardOf(id, n) || a < 0 || a >= n {
				t.Fatalf("ShardOf(%q, %d) = %d, unstable or out of range", id, n, a)
			}
			count[b]++
			if a != b {
				moved++
				if b != n {
					t.Fatalf("%q moved from shard %d to %d, not to the new shard %d", id, a, b, n)
				}
			}
		}
		want := float64(ids) / float64(n+1)
		for k, c := range count {
			if float64(c) < want*0.97 || float64(c) > want*1.03 {
				t.Fatalf("%d shards: shard %d has %d ids, want about %.0f", n+1, k, c, want)
			}
		}
		if float64(moved) < want*0.97 || float64(moved) > want*1.03 {
			t.Fatalf("%d → %d shards moved %d ids, want about %.0f", n, n+1, moved, want)
		}
	}
	if ShardOf("anyone", 1) != 0 || ShardOf("anyone", 0) != 0 {
		t.Fatal("one shard (or none) is shard 0")
	}
}
