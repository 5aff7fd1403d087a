package grpcgate

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits bound what one gRPC connection may ask of meshd. Each has a named
// default; meshd's flags set them.
type Limits struct {
	// MaxStreams is the calls one connection may have open at once
	// (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a client past it waits, one
	// that ignores it has its streams refused.
	MaxStreams uint32
	// MaxMessage is the largest request message, in bytes; a larger one is
	// refused with ResourceExhausted.
	MaxMessage int
	// MaxHeaderList is the largest metadata of a call, in bytes (HTTP/2
	// SETTINGS_MAX_HEADER_LIST_SIZE).
	MaxHeaderList uint32
	// MaxIdentities is the callers (rpc-caller values, each proven and given
	// its own connection into the relay) one gRPC connection may call as.
	MaxIdentities int
	// HandshakeTimeout bounds the HTTP/2 preface and settings exchange.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection with no call for that long (0: never).
	IdleTimeout time.Duration
	// PingInterval is the shortest interval between a client's keepalive
	// pings; a client pinging faster is sent GOAWAY (ENHANCE_YOUR_CALM).
	PingInterval time.Duration
	// WriteTimeout bounds one write to a client or a gRPC server; one that
	// stopped reading loses its connection.
	WriteTimeout time.Duration
}

// The defaults of Limits.
const (
	DefaultMaxStreams       = 1000
	DefaultMaxMessage       = 4 << 20
	DefaultMaxHeaderList    = 16 << 10
	DefaultMaxIdentities    = 16
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultPingInterval     = 10 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
)

func (l Limits) withDefaults() Limits {
	if l.MaxStreams == 0 {
		l.MaxStreams = DefaultMaxStreams
	}
	if l.MaxMessage == 0 {
		l.MaxMessage = DefaultMaxMessage
	}
	if l.MaxHeaderList == 0 {
		l.MaxHeaderList = DefaultMaxHeaderList
	}
	if l.MaxIdentities == 0 {
		l.MaxIdentities = DefaultMaxIdentities
	}
	if l.HandshakeTimeout == 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if l.PingInterval == 0 {
		l.PingInterval = DefaultPingInterval
	}
	if l.WriteTimeout == 0 {
		l.WriteTimeout = DefaultWriteTimeout
	}
	return l
}

// metrics are the gateway's own: what gRPC callers see before and after the
// relay (the relay counts the calls it routes as it does every call).
type metrics struct {
	conns    prometheus.Gauge
	accepted prometheus.Counter
	calls    *prometheus.CounterVec // by the status code answered
	refused  *prometheus.CounterVec // by reason, before the relay
	backends *prometheus.GaugeVec   // by service: 1 while its health check passes
}

func newMetrics() *metrics {
	return &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mesh_grpc_connections",
			Help: "gRPC connections from apps open now."}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "mesh_grpc_connections_total",
			Help: "gRPC connections from apps accepted."}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mesh_grpc_calls_total",
			Help: "Unary gRPC calls from apps answered, by the gRPC status code they got."}, []string{"code"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mesh_grpc_refused_total",
			Help: "gRPC calls refused by the gateway before routing, by reason."}, []string{"reason"}),
		backends: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mesh_grpc_backend_up",
			Help: "1 while a gRPC server of meshd's config (service, its address) passes its health check."}, []string{"service", "addr"}),
	}
}

// Describe and Collect make the gateway's metrics one prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.conns.Describe(ch)
	m.accepted.Describe(ch)
	m.calls.Describe(ch)
	m.refused.Describe(ch)
	m.backends.Describe(ch)
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.conns.Collect(ch)
	m.accepted.Collect(ch)
	m.calls.Collect(ch)
	m.refused.Collect(ch)
	m.backends.Collect(ch)
}
