// Package run is what the example services share: flags for the meshd to
// advertise to, advertising with retries, and a clean drain on SIGTERM.
package run

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshrpc/mesh/client"
)

// Flags are the options every example takes.
type Flags struct {
	Meshd   string
	Service string
	Zipkin  string // where this service's spans go ("": no tracing)
	Token   string // Consul ACL token proving the service's name ($MESH_TOKEN; never a flag)
}

// Options are the SDK options the flags ask for.
func (f Flags) Options(log *slog.Logger) client.Options {
	return client.Options{ServiceName: f.Service, Zipkin: f.Zipkin, Token: f.Token, Logger: log}
}

// ParseFlags reads --via (default client.LocalAddr: $MESH_VIA, the local
// meshd's socket or 127.0.0.1:21300; --meshd is its old name) and
// --service (default defaultName), and the token from $MESH_TOKEN (argv is
// public).
func ParseFlags(defaultName string) Flags {
	via := client.LocalAddr()
	var f Flags
	flag.StringVar(&f.Meshd, "via", via, "meshd `address` to advertise to (HOST:PORT or unix:PATH), as meshctl's --via")
	flag.StringVar(&f.Meshd, "meshd", via, "the old name of --via")
	flag.StringVar(&f.Service, "service", defaultName, "service `name` to advertise")
	flag.StringVar(&f.Zipkin, "zipkin", os.Getenv("MESH_ZIPKIN"), "Zipkin v2 `URL` for this service's spans (default $MESH_ZIPKIN)")
	flag.Parse()
	f.Token = os.Getenv("MESH_TOKEN")
	return f
}

// Logger is the examples' logger.
func Logger(service string) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", service)
}

// Serve advertises s to the meshd (retrying every second until it answers)
// and serves until SIGTERM or Ctrl-C, then withdraws and drains.
func Serve(s *client.Server, meshd string, log *slog.Logger) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	for {
		err := s.Advertise(ctx, meshd)
		if err == nil {
			break
		}
		log.Warn("advertise failed, retrying", "meshd", meshd, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	log.Info("advertised", "meshd", meshd)
	<-ctx.Done()
	s.Shutdown(context.Background())
}

// Dial returns a client of the meshd at once, and proves the service's name
// to it in the background (retrying every second: with a token, a proof
// can fail until the token exists, as when the mesh and its ACLs come up
// together); until then Ready reports false and calls should wait.
func Dial(f Flags, log *slog.Logger) *Client {
	c := &Client{}
	go func() {
		for {
			out, err := client.Dial(context.Background(), f.Meshd, f.Options(log))
			if err == nil {
				c.c.Store(out)
				return
			}
			log.Warn("client to meshd not ready, retrying", "meshd", f.Meshd, "err", err)
			time.Sleep(time.Second)
		}
	}()
	return c
}

// Client is a client of meshd that may not be dialed yet.
type Client struct{ c atomic.Pointer[client.Client] }

// Get is the client, nil until it is ready.
func (c *Client) Get() *client.Client { return c.c.Load() }
