// Package wsframe encodes the WebSocket frames a server writes itself
// (RFC 6455 section 5.2): one unfragmented, unmasked, uncompressed frame per
// message, so that a message's frame can be encoded once and written to many
// connections as it is.
package wsframe

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
)

// Opcodes of the frames a server sends.
const (
	OpText   = 0x1
	OpBinary = 0x2
	OpClose  = 0x8
	OpPing   = 0x9
	OpPong   = 0xA
)

// MaxHeader is the longest frame header a server writes (no mask key).
const MaxHeader = 10

// AppendHeader appends the header of a final (FIN), unmasked frame with the
// given opcode and payload length n, in the shortest length encoding.
func AppendHeader(b []byte, opcode byte, n int) []byte {
	b = append(b, 0x80|opcode&0x0F)
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

// Append appends a whole frame: AppendHeader, then the payload.
func Append(b []byte, opcode byte, payload []byte) []byte {
	return append(AppendHeader(b, opcode, len(payload)), payload...)
}

// Size is the length of the frame Append writes for a payload of n bytes.
func Size(n int) int {
	switch {
	case n <= 125:
		return 2 + n
	case n <= 0xFFFF:
		return 4 + n
	default:
		return 10 + n
	}
}

// AcceptKey is the Sec-WebSocket-Accept value for a client's
// Sec-WebSocket-Key.
func AcceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}
