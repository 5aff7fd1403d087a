// Package integration holds end-to-end tests over real processes and real
// sockets: Consul agents, several meshds on distinct loopback addresses,
// tchannel-go peers. They are behind the "integration" build tag so that
// `go test ./...` stays fast; `make test` (and CI) runs them.
package integration
