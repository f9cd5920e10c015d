package gateway

import (
	"errors"
	"os"
	"sync"
	"syscall"
)

// readPoller is the hub's epoll instance for the sockets of parked
// connections (readpoll.go), registered one-shot: a socket reports once,
// and again only when its next read loop parks. One goroutine waits for
// the instance through the runtime's own poller (the instance is itself a
// file that becomes readable), so no thread is held while nothing happens.
type readPoller struct {
	once   sync.Once
	f      *os.File // the epoll instance; nil when it could not be made
	rc     syscall.RawConn
	mu     sync.Mutex
	conns  map[uint64]*Conn // guarded by mu: connections registered, by id
	closed bool             // guarded by mu
	failed bool             // guarded by mu: epoll could not be used; read loops wait themselves

	// Read loops woken by the poller run on goroutines kept for them,
	// whose stacks have grown already (a new goroutine per frame would
	// grow its stack through the library's Read each time); one that
	// finds them all busy (a read loop waiting on the engine) gets a
	// goroutine of its own.
	work chan *Conn
	done chan struct{} // closed when the poller stops: the kept goroutines end
}

// epollCtl is syscall.EpollCtl; tests make it fail.
var epollCtl = syscall.EpollCtl

// readWorkers is how many goroutines the poller keeps for read loops.
const readWorkers = 8

// run runs c's read loop on a kept goroutine, or a new one if none is free.
func (p *readPoller) run(c *Conn) {
	select {
	case p.work <- c:
	default:
		go c.serveReads()
	}
}

// worker runs read loops until the poller stops.
func (p *readPoller) worker() {
	for {
		select {
		case c := <-p.work:
			c.serveReads()
		case <-p.done:
			return
		}
	}
}

func (p *readPoller) start() {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err == nil {
		if err = syscall.SetNonblock(epfd, true); err != nil {
			syscall.Close(epfd)
		}
	}
	if err == nil {
		p.f = os.NewFile(uintptr(epfd), "epoll")
		p.rc, err = p.f.SyscallConn()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = map[uint64]*Conn{}
	p.work, p.done = make(chan *Conn), make(chan struct{})
	if err != nil {
		p.failed = true
		return
	}
	for range readWorkers {
		go p.worker()
	}
	go p.wait()
}

// register adds c to the connections the poller may wake, before its read
// loop parks (so before any other read loop of c can start and end, which
// forgets it); the first call starts the poller. False when the poller is
// closed or failed.
func (p *readPoller) register(c *Conn) bool {
	p.once.Do(p.start)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.failed {
		return false
	}
	p.conns[c.id] = c
	return true
}

// arm registers c's socket for its next bytes, one-shot. False when the
// socket is closed or the registration failed.
func (p *readPoller) arm(c *Conn) bool {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(uint32(c.id)), Pad: int32(uint32(c.id >> 32))}
	var ctlErr error
	ctl := func(sfd uintptr) {
		cerr := p.rc.Control(func(epfd uintptr) {
			// A socket registered before is modified; the first time
			// (ENOENT), added; EEXIST: another read loop of c added it
			// first.
			op := syscall.EPOLL_CTL_MOD
			for {
				ctlErr = epollCtl(int(epfd), op, int(sfd), &ev)
				switch {
				case errors.Is(ctlErr, syscall.ENOENT) && op == syscall.EPOLL_CTL_MOD:
					op = syscall.EPOLL_CTL_ADD
					continue
				case errors.Is(ctlErr, syscall.EEXIST) && op == syscall.EPOLL_CTL_ADD:
					op = syscall.EPOLL_CTL_MOD
					continue
				}
				return
			}
		})
		if ctlErr == nil {
			ctlErr = cerr // the poller closed
		}
	}
	if err := c.nc.rc.Control(ctl); err != nil || ctlErr != nil {
		return false // the socket is closed, or epoll refused it (no room for another watch)
	}
	return true
}

// forget drops c, which has ended (its socket is closed, which takes it
// out of the epoll instance).
func (p *readPoller) forget(c *Conn) {
	p.mu.Lock()
	delete(p.conns, c.id)
	p.mu.Unlock()
}

// close stops the poller: the connections still registered are woken, and
// read loops wait on their own goroutines from then on.
func (p *readPoller) close() {
	p.once.Do(func() {})
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	f := p.f
	p.mu.Unlock()
	if f != nil {
		f.Close() // ends wait, which wakes the rest
	}
}

// wait takes the instance's events until it is closed.
func (p *readPoller) wait() {
	events := make([]syscall.EpollEvent, 128)
	var woken []*Conn
	_ = p.rc.Read(func(epfd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(epfd), events, 0)
			if err == syscall.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				return false // wait for the instance to become readable
			}
			woken = woken[:0]
			p.mu.Lock()
			for _, ev := range events[:n] {
				if c := p.conns[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]; c != nil {
					woken = append(woken, c)
				}
			}
			p.mu.Unlock()
			for _, c := range woken {
				c.wake()
			}
			if n < len(events) {
				return false
			}
		}
	})
	// Closed (or the runtime could not wait for the instance): no parked
	// connection may be left waiting for an event that will not come.
	p.mu.Lock()
	p.failed = true
	woken = woken[:0]
	for _, c := range p.conns {
		woken = append(woken, c)
	}
	p.mu.Unlock()
	for _, c := range woken {
		c.wake()
	}
	close(p.done)
}
