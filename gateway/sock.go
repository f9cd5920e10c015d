package gateway

import (
	"net"
	"sync"
	"syscall"
	"unsafe"

	"github.com/coder/websocket"

	"pushgate/internal/wsframe"
)

// sock is a connection's socket, shared by two writers: the write loop,
// which encodes its data frames itself (frameWriter) and writes them
// straight to the socket, and coder/websocket, which writes only control
// frames (pings, the pongs it answers, close frames) through its buffered
// writer. Frames never interleave: the library's buffer (connWriteBuf) holds
// any control frame and it flushes at the end of each, so each of its
// writes here is one whole frame, and the write loop writes whole frames in
// one write (a net.Conn write is not interleaved with another). mu orders
// the writes with the close: once a close frame has gone out, by either
// writer, no data frame follows it.
//
// A fan-out writes each connection's first frames from its own goroutine,
// without blocking (tryWrite): what the socket does not take at once is
// kept in pending, and goes out before anything else, from the write loop.
type sock struct {
	net.Conn
	mu      sync.Mutex
	closed  bool   // guarded by mu: a close frame was written
	pending []byte // guarded by mu: bytes of frames that must go out next

	// The non-blocking write, when the socket has a file descriptor: rc's
	// Write calls tryFn (bound once, so that a write allocates nothing),
	// which writes tryBuf and leaves its result in tryN and tryErr.
	// Guarded by mu.
	rc     syscall.RawConn
	tryFn  func(fd uintptr) bool
	tryBuf []byte
	tryN   int
	tryErr error

	// The read loop's look at the socket (peek, waitReadable): rc's Read
	// calls peekFn (bound once), which peeks at the first bytes (an empty
	// pong's length) into peekBuf and leaves its finding in peekRes;
	// peekOnce makes it report an empty socket instead of waiting. Used
	// only by the read loop.
	peekFn   func(fd uintptr) bool
	peekBuf  [6]byte
	peekRes  int
	peekOnce bool
}

func newSock(nc net.Conn) *sock {
	s := &sock{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			s.rc = rc
			s.tryFn = s.writeFd
			s.peekFn = s.peekFd
		}
	}
	return s
}

// Write is the library's (through its bufio.Writer): one whole control
// frame per call.
func (s *sock) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.flushPendingLocked(); err != nil {
		return 0, err
	}
	if len(p) > 0 && p[0]&0x0F == wsframe.OpClose {
		s.closed = true
	}
	return s.Conn.Write(p)
}

// flushPendingLocked writes what a non-blocking write left. Called with mu
// held; on error what was pending is dropped (the socket is broken).
func (s *sock) flushPendingLocked() error {
	if len(s.pending) == 0 {
		return nil
	}
	_, err := s.Conn.Write(s.pending)
	s.dropPendingLocked()
	return err
}

// dropPendingLocked empties pending, keeping a small array for next time.
func (s *sock) dropPendingLocked() {
	if cap(s.pending) > 4<<10 {
		s.pending = nil
	} else {
		s.pending = s.pending[:0]
	}
}

// hasPending reports whether bytes wait in pending.
func (s *sock) hasPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 0
}

// flushPending writes pending (blocking, within the socket's deadline).
func (s *sock) flushPending() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushPendingLocked()
}

// canTry reports whether the socket supports tryWrite.
func (s *sock) canTry() bool { return s.rc != nil }

// tryWrite is writeFrames without blocking: it writes what the socket
// takes now and keeps the rest in pending (behind what already waits
// there). Only an error of the socket is returned.
func (s *sock) tryWrite(a, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	if len(s.pending) == 0 {
		n, err := s.writeNow(a)
		if err != nil {
			return err
		}
		a = a[n:]
		if len(a) == 0 && len(b) > 0 {
			if n, err = s.writeNow(b); err != nil {
				return err
			}
			b = b[n:]
		}
	}
	s.pending = append(append(s.pending, a...), b...)
	return nil
}

// writeNow makes one write(2) of p on the non-blocking socket: n is what it
// took (0 when its buffer is full). Called with mu held.
func (s *sock) writeNow(p []byte) (int, error) {
	s.tryBuf, s.tryN, s.tryErr = p, 0, nil
	err := s.rc.Write(s.tryFn)
	s.tryBuf = nil
	if err != nil {
		return 0, err
	}
	return s.tryN, s.tryErr
}

// writeFd is tryFn.
func (s *sock) writeFd(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), s.tryBuf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			s.tryN = 0
		case err != nil:
			s.tryErr = err
		default:
			s.tryN = n
		}
		return true
	}
}

// What peek and waitReadable found.
const (
	readable   = iota // bytes to read, the end of the stream or an error: the library's Read is next
	pongRead          // an empty pong, read and dropped: the caller counts it and waits again
	cannotWait        // no file descriptor (TLS): the library's Read waits itself
	nothingYet        // peek: no bytes yet
)

// emptyPong is the head of a client's pong without a payload (FIN and
// opcode 0xA, masked, length 0), the answer to the heartbeat's pings; the
// four bytes of its mask follow.
var emptyPong = [2]byte{0x80 | wsframe.OpPong, 0x80}

// waitReadable returns once the socket has bytes to read, has reached the
// end of its stream or has failed, without reading anything, except that
// an empty pong at the head of the socket is read and reported (pongRead).
// The read loop parks here, one call deep, rather than inside the
// library's Read, whose frames keep a parked reader's stack at 4 KiB; and
// the pongs that answer the heartbeat, an idle connection's only traffic,
// never take it into Read (where the library would read them and then
// park deep for the next frame). The caller must know that the library
// holds no unread bytes and is between messages.
//
// The runtime's poller waits for the socket (edge-triggered): peekFd
// looks before every wait, so bytes that arrived before it began are
// never missed.
func (s *sock) waitReadable() int {
	if s.rc == nil {
		return cannotWait
	}
	s.peekRes = readable
	// An error (the socket closed, a deadline) is left for the library's
	// Read, which meets it too.
	_ = s.rc.Read(s.peekFn)
	return s.peekRes
}

// peek is waitReadable without the wait: nothingYet when the socket has
// no bytes now.
func (s *sock) peek() int {
	if s.rc == nil {
		return cannotWait
	}
	s.peekRes, s.peekOnce = readable, true
	_ = s.rc.Read(s.peekFn)
	s.peekOnce = false
	return s.peekRes
}

// peekFd is peekFn: a recv(2) of the first bytes with MSG_PEEK, so that
// they stay for the library's reader. It reports whether waiting is over:
// bytes are there, the peer ended the stream (0), or the socket failed.
// An empty pong is taken off the socket (pongRead).
func (s *sock) peekFd(fd uintptr) bool {
	for {
		n, _, e := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&s.peekBuf[0])), uintptr(len(s.peekBuf)),
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if s.peekOnce {
				s.peekRes = nothingYet
				return true
			}
			return false
		}
		if e == 0 && n == uintptr(len(s.peekBuf)) && [2]byte(s.peekBuf[:2]) == emptyPong {
			// The whole frame is there: take it.
			n, _, e = syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&s.peekBuf[0])), uintptr(len(s.peekBuf)),
				syscall.MSG_DONTWAIT, 0, 0)
			if e == 0 && n == uintptr(len(s.peekBuf)) {
				s.peekRes = pongRead
			}
		}
		return true
	}
}

// unread reports whether bytes wait in the socket, not yet read by the
// read loop, without reading them or waiting; false where it cannot tell
// (no file descriptor). It does not take the socket's read lock (which a
// parked read loop holds).
func (s *sock) unread() bool {
	if s.rc == nil {
		return false
	}
	var b [1]byte
	got := false
	_ = s.rc.Control(func(fd uintptr) {
		n, _, e := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		got = e == 0 && n > 0
	})
	return got
}

// writeFrames writes a (encoded frames) and then b (the payload of the
// last frame in a, when it is too big to copy) as one write, unless a close
// frame already went out.
func (s *sock) writeFrames(a, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	if err := s.flushPendingLocked(); err != nil {
		return err
	}
	if len(b) == 0 {
		_, err := s.Conn.Write(a)
		return err
	}
	bufs := net.Buffers{a, b}
	_, err := bufs.WriteTo(s.Conn)
	return err
}

// The write loop's encoding buffer: frames of a batch are copied into it and
// written together once it holds flushAt bytes; a payload over bigPayload is
// not copied but written right behind its header.
const (
	flushAt    = 32 << 10
	bigPayload = 8 << 10
)

var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// frameWriter encodes one batch's frames for a sock and writes them in as
// few writes as it can, counting what was written.
type frameWriter struct {
	s        *sock
	m        *Metrics
	nonblock bool // tryWrite instead of writeFrames
	bp       *[]byte
	buf      []byte
	// Buffered and not yet written: frames, messages among them, payload
	// bytes.
	frames, msgs, bytes int
	written             int // frames written
}

func newFrameWriter(s *sock, m *Metrics) frameWriter {
	bp := frameBufs.Get().(*[]byte)
	return frameWriter{s: s, m: m, bp: bp, buf: (*bp)[:0]}
}

// add encodes one frame holding frames queued frames (msgs of them
// messages).
func (w *frameWriter) add(typ websocket.MessageType, payload []byte, frames, msgs int) error {
	op := byte(wsframe.OpText)
	switch typ {
	case websocket.MessageBinary:
		op = wsframe.OpBinary
	case msgPing:
		op = wsframe.OpPing
	}
	if len(w.buf) > 0 && len(w.buf)+wsframe.Size(len(payload)) > flushAt {
		if err := w.flush(); err != nil {
			return err
		}
	}
	w.frames, w.msgs, w.bytes = w.frames+frames, w.msgs+msgs, w.bytes+len(payload)
	if len(payload) > bigPayload {
		w.buf = wsframe.AppendHeader(w.buf, op, len(payload))
		return w.write(payload)
	}
	w.buf = wsframe.Append(w.buf, op, payload)
	return nil
}

// flush writes what is buffered.
func (w *frameWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	return w.write(nil)
}

func (w *frameWriter) write(tail []byte) error {
	var err error
	if w.nonblock {
		err = w.s.tryWrite(w.buf, tail)
	} else {
		err = w.s.writeFrames(w.buf, tail)
	}
	if err != nil {
		return err
	}
	w.written += w.frames
	w.m.delivered.Add(float64(w.msgs))
	w.m.bytesOut.Add(float64(w.bytes))
	w.buf, w.frames, w.msgs, w.bytes = w.buf[:0], 0, 0, 0
	return nil
}

// release gives the buffer back (unless a burst made it large).
func (w *frameWriter) release() {
	if cap(w.buf) <= 2*flushAt {
		*w.bp = w.buf[:0]
		frameBufs.Put(w.bp)
	}
}
