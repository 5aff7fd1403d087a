// Package testkit holds what mesh's tests and benchmarks in several packages
// share: a logger that drops everything, polling for a condition (WaitFor),
// benign load and the check that it went unharmed (Load, Unharmed), the
// call benchmark harness (Bench) on internal/loadgen, a CA for test
// identities, a raw TChannel peer, and metric reads. Of mesh it imports
// only frame and loadgen, so any package's tests can use it.
package testkit
