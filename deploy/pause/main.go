// Command pause holds a container's network namespace for the programs that
// share it (in deploy/compose.yaml: a host's Consul agent, meshd and
// services), so any of them can be stopped without taking the host's network
// down. It does nothing until SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
}
