// Package meshd is the daemon behind cmd/meshd. Start wires a Config
// together: the app and host listeners (listen.go), the relay
// (internal/relay), a discovery registry, meshd's own services (Hyperbahn's
// advertise and meshd's, advertise.go and service.go) and the admin HTTP
// endpoints; Shutdown drains. Run is what cmd/meshd calls with the Options
// it parsed from flags, environment and a YAML file (options.go): it opens
// the registry (Consul, or the embedded one), trust and intentions, starts
// the daemon, follows policies in Consul KV, and on the end of its context
// drains and stops everything that follows Consul (run.go).
package meshd
