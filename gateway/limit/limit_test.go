package limit

import "testing"

func TestBucket(t *testing.T) {
	b := NewBucket(1, 5) // refills one per second: none during this test
	n := 0
	for range 100 {
		if b.Allow() {
			n++
		}
	}
	if n < 5 || n > 6 {
		t.Fatalf("allowed %d of 100 with burst 5", n)
	}
	b = NewBucket(1, 10)
	if !b.AllowN(7) || b.AllowN(7) || !b.AllowN(3) {
		t.Fatal("AllowN must take n tokens or none")
	}
	var none *Bucket
	if !none.Allow() || NewBucket(0, 1) != nil {
		t.Fatal("a nil bucket must allow everything")
	}
	k := NewKeyed(1, 2)
	got := []bool{k.Allow("a"), k.Allow("a"), k.Allow("a"), k.Allow("b")}
	if !got[0] || !got[1] || got[2] || !got[3] {
		t.Fatalf("keyed buckets must be independent: %v", got)
	}
}
