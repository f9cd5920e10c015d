package redisengine

import "strconv"

// A Redis Cluster serves each key from the master that owns its hash slot
// (CRC16 of the key's hash tag, mod 16384). With one hash tag every key
// of pushgate is in one slot, on one master. ClusterTags gives a Cluster
// deployment k hash tags, one per virtual shard of the sharded engine, so
// that its work spreads over k slots, and so over the masters: tag i is
// "<prefix>-<n>" with the smallest n whose slot lies in the i-th of k
// equal ranges of the slots. redis-cli --cluster create gives each master
// one range of equal size, so with k a multiple of the masters each
// master serves k/masters tags; another layout still spreads them as its
// ranges do. The tags depend only on prefix and k: every node computes
// the same ones.

// ClusterSlots is the number of hash slots of a Redis Cluster.
const ClusterSlots = 16384

// ClusterTags returns the k hash tags (without braces) of a Cluster
// deployment whose key prefix is prefix; k <= 1 is prefix alone, the keys
// of a deployment that does not spread.
func ClusterTags(prefix string, k int) []string {
	if k <= 1 {
		return []string{prefix}
	}
	tags := make([]string, k)
	n := 0
	for i := range tags {
		lo, hi := i*ClusterSlots/k, (i+1)*ClusterSlots/k
		for n = 0; ; n++ {
			t := prefix + "-" + strconv.Itoa(n)
			if s := KeySlot(t); s >= lo && s < hi {
				tags[i] = t
				break
			}
		}
	}
	return tags
}

// KeySlot returns the hash slot of a hash tag (or of a key without one):
// CRC16 (XMODEM) mod 16384, as Redis Cluster computes it.
func KeySlot(tag string) int {
	var crc uint16
	for i := 0; i < len(tag); i++ {
		crc ^= uint16(tag[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % ClusterSlots
}
