package meshd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/outbox"
	"github.com/meshrpc/mesh/internal/relay"
)

// routeIP is this host's address on its default route: the source address
// the kernel picks for a UDP "connection" to a public address (no packet is
// sent).
func routeIP() (net.IP, error) {
	c, err := net.Dial("udp", "192.0.2.1:9") // TEST-NET-1: never routed anywhere real
	if err != nil {
		return nil, fmt.Errorf("no default route: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP, nil
}

// listenUnix opens the app socket at path, in place of a stale one a
// meshd that died left behind (but never of a file that is not a socket),
// open to every local user: the advertise rule decides what each may do.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen unix %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen unix %s: another meshd serves it", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	return l, nil
}

// connOptions are those of every connection; src is what meshd knows of
// its far end.
func (d *Daemon) connOptions(src *relay.Source) conn.Options {
	return conn.Options{
		Tag:         src,
		HostPort:    d.cfg.Advertise,
		ProcessName: "meshd " + d.cfg.NodeName,
		Handler:     d.handle,
		Relayer:     d.relay,
		Logger:      d.log,
		OnClose:     d.connClosed,

		HandshakeTimeout: d.limits.HandshakeTimeout,
		IdleTimeout:      d.limits.IdleTimeout,
		MaxQueued:        d.limits.MaxQueued,
		QueueBudget:      d.queued,
	}
}

// accept serves one listener; on the host listener (peer) a connection is
// another meshd once it proved it with its certificate.
func (d *Daemon) accept(lis net.Listener, peer bool) {
	for {
		nc, err := lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Warn("accept failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		nc = outbox.Socket(nc) // reads and writes without the scheduler's bookkeeping, under TLS too
		if !d.adm.admit(d.limits, nc.RemoteAddr()) {
			nc.Close() // over the connection limits: refused before it costs anything
			continue
		}
		go func() {
			failed := func(err error) {
				d.adm.leave(nc.RemoteAddr())
				d.closed.handshake(err)
				d.log.Debug("handshake failed", "peer", nc.RemoteAddr().String(), "err", err)
			}
			if !peer {
				served, err := d.serveGRPC(nc, func() { d.adm.leave(nc.RemoteAddr()) })
				if err != nil {
					nc.Close()
					failed(err)
					return
				}
				if served {
					return
				}
			}
			o := d.connOptions(&relay.Source{Meshd: peer})
			o.OnClose = func(c *conn.Conn, err error) {
				d.adm.leave(nc.RemoteAddr())
				d.connClosed(c, err)
			}
			var c *conn.Conn
			tnc, err := d.serverTLS(nc, peer)
			if err == nil {
				c, err = conn.Server(tnc, o)
			}
			if err != nil {
				failed(err)
				return
			}
			d.track(c)
		}()
	}
}

// serverTLS runs the TLS handshake of a host listener's connection, within
// the handshake timeout; an app connection stays as it is.
func (d *Daemon) serverTLS(nc net.Conn, peer bool) (net.Conn, error) {
	if !peer || d.cfg.Trust == nil {
		return nc, nil
	}
	tc := tls.Server(nc, d.cfg.Trust.ServerConfig())
	tc.SetDeadline(time.Now().Add(d.limits.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		nc.Close()
		return nil, &tlsError{err}
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// tlsError is a refused TLS handshake: a peer that is no meshd of this
// mesh, or none at all.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "tls handshake: " + e.err.Error() }

func (e *tlsError) Unwrap() error { return e.err }

// dialPeer connects to another meshd for the relay, over TLS when the host
// boundary has it.
func (d *Daemon) dialPeer(ctx context.Context, addr string) (*conn.Conn, error) {
	var dialer net.Dialer
	nc, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &frame.Error{Code: frame.ErrCodeNetwork, Message: err.Error()}
	}
	nc = outbox.Socket(nc)
	if d.cfg.Trust != nil {
		tc := tls.Client(nc, d.cfg.Trust.ClientConfig())
		hctx, cancel := context.WithTimeout(ctx, d.limits.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, &frame.Error{Code: frame.ErrCodeNetwork, Message: "tls handshake with " + addr + ": " + err.Error()}
		}
		nc = tc
	}
	c, err := conn.Client(nc, d.connOptions(&relay.Source{Meshd: true}))
	if err != nil {
		return nil, err
	}
	d.track(c)
	return c, nil
}

func (d *Daemon) track(c *conn.Conn) {
	d.mu.Lock()
	d.conns[c] = struct{}{}
	d.mu.Unlock()
	if c.Closed() { // closed before it was tracked
		d.connClosed(c, c.Err())
	}
}

func (d *Daemon) connClosed(c *conn.Conn, err error) {
	d.closed.closed(err)
	d.mu.Lock()
	delete(d.conns, c)
	d.mu.Unlock()
	d.appGone(c)
}
