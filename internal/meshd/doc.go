// Package meshd is the daemon behind cmd/meshd: it wires a listener, the
// relay (internal/relay), a discovery registry and the admin HTTP endpoints together, serves
// Hyperbahn-compatible advertise calls from local apps, and drains cleanly.
// cmd/meshd only turns flags, environment and a config file into a Config
// and calls Run.
package meshd
