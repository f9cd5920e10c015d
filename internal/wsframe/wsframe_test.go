package wsframe

import (
	"bytes"
	"strings"
	"testing"
)

// The header bytes for each length encoding, written out from RFC 6455
// section 5.2 (and its examples in section 5.7).
func TestAppendHeader(t *testing.T) {
	cases := []struct {
		op   byte
		n    int
		want []byte
	}{
		{OpText, 0, []byte{0x81, 0x00}},
		{OpText, 5, []byte{0x81, 0x05}}, // 5.7: a single-frame unmasked text message "Hello"
		{OpBinary, 125, []byte{0x82, 125}},
		{OpBinary, 126, []byte{0x82, 126, 0x00, 126}},
		{OpBinary, 256, []byte{0x82, 0x7E, 0x01, 0x00}}, // 5.7: 256 bytes binary message
		{OpText, 65535, []byte{0x81, 126, 0xFF, 0xFF}},
		{OpBinary, 65536, []byte{0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}}, // 5.7: 64 KiB binary message
		{OpClose, 2, []byte{0x88, 0x02}},
		{OpPing, 0, []byte{0x89, 0x00}},
		{OpPong, 5, []byte{0x8A, 0x05}},
	}
	for _, tc := range cases {
		got := AppendHeader(nil, tc.op, tc.n)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("AppendHeader(%#x, %d) = % x, want % x", tc.op, tc.n, got, tc.want)
		}
		if len(got) > MaxHeader {
			t.Errorf("AppendHeader(%#x, %d): %d bytes, more than MaxHeader", tc.op, tc.n, len(got))
		}
		if s := Size(tc.n); s != len(got)+tc.n {
			t.Errorf("Size(%d) = %d, want %d", tc.n, s, len(got)+tc.n)
		}
	}
}

func TestAppend(t *testing.T) {
	got := Append([]byte("x"), OpText, []byte("Hello"))
	if want := []byte{'x', 0x81, 0x05, 'H', 'e', 'l', 'l', 'o'}; !bytes.Equal(got, want) {
		t.Fatalf("Append = % x, want % x", got, want)
	}
	big := Append(nil, OpBinary, []byte(strings.Repeat("a", 70000)))
	if len(big) != Size(70000) || big[1] != 127 {
		t.Fatalf("70000-byte frame: %d bytes, length byte %d", len(big), big[1])
	}
}

func TestAcceptKey(t *testing.T) {
	// RFC 6455 section 1.3.
	if got := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("AcceptKey = %q", got)
	}
}
