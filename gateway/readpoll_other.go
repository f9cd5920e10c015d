//go:build !linux

package gateway

// readPoller parks read loops on Linux only (readpoll_linux.go); elsewhere
// each connection's read loop waits on its own goroutine.
type readPoller struct{}

func (p *readPoller) arm(*Conn) bool      { return false }
func (p *readPoller) register(*Conn) bool { return false }
func (p *readPoller) forget(*Conn)        {}
func (p *readPoller) close()              {}
func (p *readPoller) run(c *Conn)         { go c.serveReads() }
