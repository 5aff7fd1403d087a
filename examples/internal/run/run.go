// Package run is what the example services share: flags for the meshd to
// advertise to, advertising with retries, and a clean drain on SIGTERM.
package run

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshrpc/mesh/client"
)

// Flags are the options every example takes.
type Flags struct {
	Meshd   string
	Service string
	Zipkin  string // where this service's spans go ("": no tracing)
}

// Options are the SDK options the flags ask for.
func (f Flags) Options(log *slog.Logger) client.Options {
	return client.Options{ServiceName: f.Service, Zipkin: f.Zipkin, Logger: log}
}

// ParseFlags reads --meshd (default $MESH_VIA or 127.0.0.1:21300) and
// --service (default defaultName).
func ParseFlags(defaultName string) Flags {
	via := os.Getenv("MESH_VIA")
	if via == "" {
		via = "127.0.0.1:21300"
	}
	var f Flags
	flag.StringVar(&f.Meshd, "meshd", via, "meshd `address` to advertise to")
	flag.StringVar(&f.Service, "service", defaultName, "service `name` to advertise")
	flag.StringVar(&f.Zipkin, "zipkin", os.Getenv("MESH_ZIPKIN"), "Zipkin v2 `URL` for this service's spans (default $MESH_ZIPKIN)")
	flag.Parse()
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
