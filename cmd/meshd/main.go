// Command meshd is the mesh daemon: one per host. See `meshd --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/meshrpc/mesh/internal/meshd"
)

func main() {
	opts, err := meshd.ParseOptions(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, meshd.ErrVersion) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshd:", err)
		os.Exit(2)
	}
	log := opts.Logger(os.Stderr)
	log.Info("meshd runs Go code on", "cpus", meshd.UseProcs(opts, os.Getenv), "of", runtime.NumCPU())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := meshd.Run(ctx, opts, log); err != nil {
		log.Error("meshd failed", "err", err)
		os.Exit(1)
	}
}
