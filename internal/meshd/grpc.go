package meshd

import (
	"context"
	"net"
	"time"

	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/grpcgate"
	"github.com/meshrpc/mesh/internal/relay"
)

// gateMesh is what the gRPC gateway sees of meshd: connections into the
// relay like an app's, the advertise rule's proofs, and registration.
type gateMesh struct{ d *Daemon }

// Attach joins an app's connection to meshd in memory (conn.Join): meshd's
// end is served as a local app's, carrying caller when proven.
func (m gateMesh) Attach(app conn.Options, caller string) (ours, theirs *conn.Conn) {
	src := &relay.Source{}
	if caller != "" {
		src.SetCaller(caller)
	}
	ours, theirs = conn.Join(app, m.d.connOptions(src))
	m.d.track(theirs)
	return ours, theirs
}

func (m gateMesh) Prove(ctx context.Context, nc net.Conn, caller, token string) error {
	return m.d.prove(ctx, nc, caller, token, "grpc app at "+nc.RemoteAddr().String())
}

// Serve registers a gRPC server of meshd's config: the config is its proof.
func (m gateMesh) Serve(ctx context.Context, from *conn.Conn, service string, meta map[string]string) error {
	return m.d.addInstances(ctx, from, []string{service}, "", false, meta)
}

func (m gateMesh) Withdraw(ctx context.Context, from *conn.Conn) error {
	return m.d.unadvertise(ctx, from, nil)
}

// startGRPC opens the gateway for gRPC apps and the servers of the config.
func (d *Daemon) startGRPC() error {
	if d.cfg.GRPC == nil {
		return nil
	}
	l := *d.cfg.GRPC
	if l.HandshakeTimeout == 0 {
		l.HandshakeTimeout = d.limits.HandshakeTimeout
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = d.limits.IdleTimeout // a gRPC connection with no call for as long is sent GOAWAY
	}
	d.gate = grpcgate.NewGateway(gateMesh{d}, l, d.log)
	d.metrics.MustRegister(d.gate.Collector())
	for _, bc := range d.cfg.GRPCServers {
		b, err := d.gate.StartBackend(bc)
		if err != nil {
			d.stopGRPC()
			return err
		}
		d.backends = append(d.backends, b)
	}
	return nil
}

// serveGRPC hands an app connection to the gateway if it speaks HTTP/2,
// and reports whether it did.
func (d *Daemon) serveGRPC(nc net.Conn, leave func()) (bool, error) {
	if d.gate == nil {
		return false, nil
	}
	h2, err := grpcgate.IsHTTP2(nc, time.Now().Add(d.limits.HandshakeTimeout))
	if err != nil || !h2 {
		return false, err
	}
	d.gate.Serve(nc, leave)
	return true, nil
}

// stopGRPC closes the gateway and the servers' connections.
func (d *Daemon) stopGRPC() {
	for _, b := range d.backends {
		b.Close()
	}
	if d.gate != nil {
		d.gate.Close()
	}
}
