package redisengine

import "testing"

// KeySlot agrees with Redis's CLUSTER KEYSLOT (values from Redis 7.0), and
// each tag of ClusterTags lies in its own range of slots.
func TestClusterTags(t *testing.T) {
	for tag, slot := range map[string]int{"pushgate": 381, "pushgate-0": 378, "foo": 12182, "123456789": 12739, "": 0} {
		if got := KeySlot(tag); got != slot {
			t.Errorf("KeySlot(%q) = %d, want %d", tag, got, slot)
		}
	}
	if got := ClusterTags("pushgate", 1); len(got) != 1 || got[0] != "pushgate" {
		t.Fatalf("one tag: %v", got)
	}
	for _, k := range []int{2, 3, 6, 64} {
		tags := ClusterTags("pushgate", k)
		for i, tag := range tags {
			if s := KeySlot(tag); s < i*ClusterSlots/k || s >= (i+1)*ClusterSlots/k {
				t.Fatalf("k=%d: tag %d %q in slot %d", k, i, tag, s)
			}
		}
	}
}
