// Package testconsul runs real Consul dev agents for tests: built from the Go
// module proxy by scripts/tool.sh, each on free loopback ports, stopped with
// the test. Tests that need Consul fail (never skip) when it cannot start.
package testconsul
