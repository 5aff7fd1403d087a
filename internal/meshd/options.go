package meshd

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshrpc/mesh/discovery/consul"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/grpcgate"
	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/routing"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/version"
	"github.com/meshrpc/mesh/router"
)

// Options is meshd's configuration as users write it: flags, MESHD_*
// environment variables, or a YAML file, in that order of precedence.
type Options struct {
	Listen          string        `yaml:"listen"`
	ListenUnix      string        `yaml:"listen_unix"`
	PeerListen      string        `yaml:"peer_listen"`
	TLS             string        `yaml:"tls"`
	TLSCert         string        `yaml:"tls_cert"`
	TLSKey          string        `yaml:"tls_key"`
	TLSCA           string        `yaml:"tls_ca"`
	Advertise       string        `yaml:"advertise"`
	Admin           string        `yaml:"admin"`
	Pprof           string        `yaml:"pprof"`
	OpsView         string        `yaml:"ops_view"`
	Node            string        `yaml:"node"`
	Zone            string        `yaml:"zone"`
	Consul          string        `yaml:"consul"`
	ConsulToken     string        `yaml:"consul_token"` // or CONSUL_HTTP_TOKEN; never a flag
	ConsulTokenFile string        `yaml:"consul_token_file"`
	ConsulDC        string        `yaml:"consul_datacenter"`
	ConsulTTL       time.Duration `yaml:"consul_ttl"`
	ConsulWatches   int           `yaml:"consul_max_watches"`
	ConsulReads     string        `yaml:"consul_reads"`
	PeersFile       string        `yaml:"peers_file"`
	LogFormat       string        `yaml:"log_format"`
	LogLevel        string        `yaml:"log_level"`
	DrainTimeout    time.Duration `yaml:"drain_timeout"`
	ForgetAfter     time.Duration `yaml:"forget_after"`
	Zipkin          string        `yaml:"zipkin"`
	ZipkinEnc       string        `yaml:"zipkin_encoding"`
	TraceRate       string        `yaml:"trace_sample_rate"`
	TraceService    string        `yaml:"trace_service"`
	TraceQuery      string        `yaml:"trace_query"`
	TraceQueryAPI   string        `yaml:"trace_query_api"`
	TraceUI         string        `yaml:"trace_ui"`
	// Limits (docs/LIMITS.md).
	MaxConns          int           `yaml:"max_connections"`
	MaxConnsPerAddr   int           `yaml:"max_connections_per_addr"`
	HandshakeTimeout  time.Duration `yaml:"handshake_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	MaxQueued         int           `yaml:"max_queued_bytes"`
	MaxQueuedTotal    int           `yaml:"max_queued_bytes_total"`
	MaxCallsPerConn   int           `yaml:"max_calls_per_connection"`
	MaxHalfSent       int           `yaml:"max_half_sent_per_connection"`
	MaxHalfSentCaller int           `yaml:"max_half_sent_per_caller"`
	MaxRetryBytesConn int           `yaml:"max_retry_bytes_per_connection"`
	MaxRetryBytes     int           `yaml:"max_retry_bytes"`
	MaxTTL            time.Duration `yaml:"max_ttl"`
	GCHeapFloor       int           `yaml:"gc_heap_floor_bytes"`
	Procs             int           `yaml:"procs"`
	// gRPC (docs/GRPC.md).
	GRPC              string        `yaml:"grpc"`
	GRPCServers       string        `yaml:"grpc_servers"`
	GRPCCheckEvery    time.Duration `yaml:"grpc_check_every"`
	GRPCMaxStreams    int           `yaml:"grpc_max_streams"`
	GRPCMaxMessage    int           `yaml:"grpc_max_message_bytes"`
	GRPCMaxHeaderList int           `yaml:"grpc_max_header_list_bytes"`
	GRPCMaxIdentities int           `yaml:"grpc_max_identities"`
	// Policies per service ("*": the default), from the YAML file only;
	// Consul KV under PolicyPrefix overrides them service by service.
	Policies router.Policies `yaml:"policies"`
	// Who may advertise and call what (docs/SECURITY.md).
	AdvertiseSameUser string            `yaml:"advertise_same_user"`
	AdvertiseGrants   []Grant           `yaml:"advertise_grants"` // YAML only
	DefaultIntention  string            `yaml:"default_intention"`
	Intentions        []intentions.Rule `yaml:"intentions"` // YAML only, for the embedded registry
}

// Defaults are the options of a meshd given nothing.
func Defaults() Options {
	return Options{
		Listen: "127.0.0.1:21300",
		TLS:    "auto",
		Admin:  "127.0.0.1:21301",

		AdvertiseSameUser: "on",
		Pprof:             "off",
		OpsView:           "on",
		ConsulTTL:         10 * time.Second,
		ConsulWatches:     consul.DefaultMaxWatches,
		ConsulReads:       "blocking",
		LogFormat:         "text",
		LogLevel:          "info",
		DrainTimeout:      10 * time.Second,
		ForgetAfter:       routing.ForgetAfter,
		ZipkinEnc:         tracing.EncodingProto,
		TraceRate:         "1",
		TraceService:      "meshd",
		TraceQueryAPI:     "jaeger",

		MaxConns:          DefaultConnections,
		MaxConnsPerAddr:   DefaultConnectionsPerAddr,
		HandshakeTimeout:  DefaultHandshakeTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxQueued:         conn.DefaultMaxQueued,
		MaxQueuedTotal:    DefaultMaxQueuedTotal,
		MaxCallsPerConn:   relay.DefaultCallsPerConn,
		MaxHalfSent:       relay.DefaultHalfSentPerConn,
		MaxHalfSentCaller: relay.DefaultHalfSentPerCaller,
		MaxRetryBytesConn: relay.DefaultSavedPerConn,
		MaxRetryBytes:     relay.DefaultSavedTotal,
		MaxTTL:            relay.DefaultMaxTTL,
		GCHeapFloor:       DefaultGCHeapFloor,

		GRPC:              "on",
		GRPCCheckEvery:    grpcgate.DefaultCheckEvery,
		GRPCMaxStreams:    grpcgate.DefaultMaxStreams,
		GRPCMaxMessage:    grpcgate.DefaultMaxMessage,
		GRPCMaxHeaderList: grpcgate.DefaultMaxHeaderList,
		GRPCMaxIdentities: grpcgate.DefaultMaxIdentities,
	}
}

// limits are the Limits the options set.
func (o Options) limits() Limits {
	return Limits{
		Connections: o.MaxConns, ConnectionsPerAddr: o.MaxConnsPerAddr,
		HandshakeTimeout: o.HandshakeTimeout, IdleTimeout: o.IdleTimeout,
		MaxQueued: o.MaxQueued, MaxQueuedTotal: o.MaxQueuedTotal,
		Limits: relay.Limits{
			CallsPerConn: o.MaxCallsPerConn, HalfSentPerConn: o.MaxHalfSent, HalfSentPerCaller: o.MaxHalfSentCaller,
			SavedPerConn: int64(o.MaxRetryBytesConn), SavedTotal: int64(o.MaxRetryBytes), MaxTTL: o.MaxTTL,
		},
	}
}

// grpcLimits are the gRPC gateway's limits, nil with --grpc off.
func (o Options) grpcLimits() *grpcgate.Limits {
	if o.GRPC == "off" {
		return nil
	}
	return &grpcgate.Limits{MaxStreams: uint32(o.GRPCMaxStreams), MaxMessage: o.GRPCMaxMessage, MaxHeaderList: uint32(o.GRPCMaxHeaderList), MaxIdentities: o.GRPCMaxIdentities,
		HandshakeTimeout: o.HandshakeTimeout, IdleTimeout: o.IdleTimeout}
}

// grpcServers parses --grpc-servers: service=host:port, comma-separated.
func (o Options) grpcServers() ([]grpcgate.BackendConfig, error) {
	var out []grpcgate.BackendConfig
	for item := range strings.SplitSeq(o.GRPCServers, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		service, addr, ok := strings.Cut(item, "=")
		if _, _, err := net.SplitHostPort(addr); !ok || service == "" || err != nil {
			return nil, fmt.Errorf("--grpc-servers %q: want service=host:port", item)
		}
		if o.GRPC == "off" {
			return nil, errors.New("--grpc-servers needs --grpc on")
		}
		out = append(out, grpcgate.BackendConfig{Service: service, Addr: addr, CheckEvery: o.GRPCCheckEvery})
	}
	return out, nil
}

// option describes one setting for the flag set, the environment and --help.
type option struct {
	name, env, help string
	str             *string
	dur             *time.Duration
	num             *int
}

func (o *Options) table() []option {
	return []option{
		{"listen", "MESHD_LISTEN", "TChannel `address` for this host's apps (plaintext; keep it on loopback)", &o.Listen, nil, nil},
		{"listen-unix", "MESHD_LISTEN_UNIX", "Unix socket `path` for this host's apps too (SDK: unix:PATH); meshd learns each app's Unix user from the kernel", &o.ListenUnix, nil, nil},
		{"peer-listen", "MESHD_PEER_LISTEN", "TChannel `address` other meshds call, with mutual TLS 1.3 (empty: no calls from other hosts; needed with Consul)", &o.PeerListen, nil, nil},
		{"tls", "MESHD_TLS", "identities of the host boundary: `auto` (Consul's CA with Consul, else the --tls-* files), consul, files, or off (plaintext: any process reaching --peer-listen acts as a meshd)", &o.TLS, nil, nil},
		{"tls-cert", "MESHD_TLS_CERT", "PEM `file`: this meshd's certificate chain, with a URI SAN spiffe://<trust-domain>/ns/default/dc/<dc>/svc/meshd (read again when it changes)", &o.TLSCert, nil, nil},
		{"tls-key", "MESHD_TLS_KEY", "PEM `file`: the certificate's private key", &o.TLSKey, nil, nil},
		{"tls-ca", "MESHD_TLS_CA", "PEM `file`: the CA certificates peers' chains must end in", &o.TLSCA, nil, nil},
		{"advertise", "MESHD_ADVERTISE", "`address` other hosts reach this meshd at (default: the peer-listen address; on 0.0.0.0, this host's address on its default route, logged at start)", &o.Advertise, nil, nil},
		{"advertise-same-user", "MESHD_ADVERTISE_SAME_USER", "`on`: apps on this host run by meshd's own Unix user may advertise any name; off: only a Consul token or advertise_grants (YAML) prove a name", &o.AdvertiseSameUser, nil, nil},
		{"default-intention", "MESHD_DEFAULT_INTENTION", "`allow` or deny calls no intention matches (default: with Consul, its ACL default policy, as Consul's own proxies; else allow)", &o.DefaultIntention, nil, nil},
		{"admin", "MESHD_ADMIN", "admin HTTP `address` (/health, /live, /status, /calls, /metrics); \"off\" disables it", &o.Admin, nil, nil},
		{"pprof", "MESHD_PPROF", "`on` also serves /debug/pprof on the admin address (off by default: a profile can carry secrets)", &o.Pprof, nil, nil},
		{"ops-view", "MESHD_OPS_VIEW", "`on`: count every call per caller, service and method (mesh_calls_total), keep an hour of those figures and serve the dashboard; off saves that work (the other metrics, /calls and meshctl tap stay)", &o.OpsView, nil, nil},
		{"zone", "MESHD_ZONE", "this host's `zone` (e.g. its availability zone): the instances meshd registers carry it, and calls stay in it while it has the capacity (default: the Consul agent's node metadata \"zone\", else none)", &o.Zone, nil, nil},
		{"node", "MESHD_NODE", "this host's `name` in the registry (default: hostname)", &o.Node, nil, nil},
		{"consul", "MESHD_CONSUL", "Consul agent `address`, or \"off\" for the embedded registry (default: CONSUL_HTTP_ADDR, else 127.0.0.1:8500 if an agent answers there)", &o.Consul, nil, nil},
		{"consul-token-file", "MESHD_CONSUL_TOKEN_FILE", "`file` holding the Consul ACL token (or set CONSUL_HTTP_TOKEN; a token is never a flag, since argv is public)", &o.ConsulTokenFile, nil, nil},
		{"consul-datacenter", "MESHD_CONSUL_DATACENTER", "Consul `datacenter` (default: the agent's)", &o.ConsulDC, nil, nil},
		{"consul-ttl", "MESHD_CONSUL_TTL", "TTL of instance health checks: a dead meshd's instances leave the healthy set within it", nil, &o.ConsulTTL, nil},
		{"consul-reads", "MESHD_CONSUL_READS", "how service health is read: `blocking` (a blocking query each, answered by the servers) or cached (through the agent's cache and its streaming backend)", &o.ConsulReads, nil, nil},
		{"consul-max-watches", "MESHD_CONSUL_MAX_WATCHES", "services followed by their own blocking query (each holds one of the HTTP connections Consul allows an address, 200 by default); more share one query", nil, nil, &o.ConsulWatches},
		{"peers-file", "MESHD_PEERS_FILE", "JSON `file` of static remote instances for the embedded registry", &o.PeersFile, nil, nil},
		{"log-format", "MESHD_LOG_FORMAT", "log `format`: text or json", &o.LogFormat, nil, nil},
		{"log-level", "MESHD_LOG_LEVEL", "log `level`: debug, info, warn or error", &o.LogLevel, nil, nil},
		{"drain-timeout", "MESHD_DRAIN_TIMEOUT", "how long a stop waits for calls in flight", nil, &o.DrainTimeout, nil},
		{"forget-after", "MESHD_FORGET_AFTER", "how long meshd keeps an instance no call found listed (it left): its breaker, latency and metric series", nil, &o.ForgetAfter, nil},
		{"zipkin", "MESHD_ZIPKIN", "Zipkin v2 `URL` spans go to (e.g. http://127.0.0.1:9411/api/v2/spans); empty: no tracing", &o.Zipkin, nil, nil},
		{"zipkin-encoding", "MESHD_ZIPKIN_ENCODING", "`encoding` spans are posted in: proto (Zipkin's proto3, smaller and cheaper) or json", &o.ZipkinEnc, nil, nil},
		{"trace-sample-rate", "MESHD_TRACE_SAMPLE_RATE", "share of new traces recorded, 0 to 1; calls arriving with a trace keep its decision", &o.TraceRate, nil, nil},
		{"trace-service", "MESHD_TRACE_SERVICE", "service `name` of meshd's spans", &o.TraceService, nil, nil},
		{"trace-query", "MESHD_TRACE_QUERY", "base `URL` of the trace backend's query API the dashboard reads traces from (e.g. Jaeger's http://127.0.0.1:16686); empty: no traces in the dashboard", &o.TraceQuery, nil, nil},
		{"trace-query-api", "MESHD_TRACE_QUERY_API", "which query `API` --trace-query speaks: jaeger (/api/traces) or zipkin (/api/v2/traces)", &o.TraceQueryAPI, nil, nil},
		{"trace-ui", "MESHD_TRACE_UI", "base `URL` of the trace UI the dashboard links traces to (default: --trace-query)", &o.TraceUI, nil, nil},
		{"max-connections", "MESHD_MAX_CONNECTIONS", "TChannel connections meshd holds at most; more are closed at once", nil, nil, &o.MaxConns},
		{"max-connections-per-addr", "MESHD_MAX_CONNECTIONS_PER_ADDR", "connections from one remote IP address at most", nil, nil, &o.MaxConnsPerAddr},
		{"handshake-timeout", "MESHD_HANDSHAKE_TIMEOUT", "a new connection that has not completed the init exchange by then is closed", nil, &o.HandshakeTimeout, nil},
		{"idle-timeout", "MESHD_IDLE_TIMEOUT", "a connection silent that long is pinged, and closed if it does not answer within half of it", nil, &o.IdleTimeout, nil},
		{"max-queued-bytes", "MESHD_MAX_QUEUED_BYTES", "bytes queued for a peer that is not reading before meshd gives up on it", nil, nil, &o.MaxQueued},
		{"max-queued-bytes-total", "MESHD_MAX_QUEUED_BYTES_TOTAL", "bytes queued for slow peers in all (past 64 KiB each); past it those holding more are refused", nil, nil, &o.MaxQueuedTotal},
		{"max-calls-per-connection", "MESHD_MAX_CALLS_PER_CONNECTION", "calls in flight through meshd from one app connection; more are answered busy", nil, nil, &o.MaxCallsPerConn},
		{"max-half-sent-per-connection", "MESHD_MAX_HALF_SENT_PER_CONNECTION", "calls sent on one connection and not fully sent yet; an instance at it takes no new call", nil, nil, &o.MaxHalfSent},
		{"max-half-sent-per-caller", "MESHD_MAX_HALF_SENT_PER_CALLER", "calls one app connection has started and not finished sending; more are answered busy", nil, nil, &o.MaxHalfSentCaller},
		{"max-retry-bytes-per-connection", "MESHD_MAX_RETRY_BYTES_PER_CONNECTION", "request bytes kept for retries per app connection; calls past it are not retried", nil, nil, &o.MaxRetryBytesConn},
		{"max-retry-bytes", "MESHD_MAX_RETRY_BYTES", "request bytes kept for retries in all", nil, nil, &o.MaxRetryBytes},
		{"max-ttl", "MESHD_MAX_TTL", "the longest ttl a call may ask for; a longer one is cut to it", nil, &o.MaxTTL, nil},
		{"gc-heap-floor-bytes", "MESHD_GC_HEAP_FLOOR_BYTES", "heap size under which meshd does not collect garbage (fewer collections, a third less CPU per gRPC call); 0: the Go runtime's own policy, as does setting GOGC", nil, nil, &o.GCHeapFloor},
		{"procs", "MESHD_PROCS", "CPUs meshd runs Go code on at once (GOMAXPROCS); 0: half of those it may use, at least one (GOMAXPROCS set in the environment wins)", nil, nil, &o.Procs},
		{"grpc", "MESHD_GRPC", "`on`: stock gRPC apps call through meshd on the app listeners (HTTP/2 cleartext, told from TChannel by a connection's first bytes); off: TChannel only", &o.GRPC, nil, nil},
		{"grpc-servers", "MESHD_GRPC_SERVERS", "stock gRPC servers on this host that serve mesh services: `service=host:port`[,...]; each joins the mesh while its grpc.health.v1 check passes", &o.GRPCServers, nil, nil},
		{"grpc-check-every", "MESHD_GRPC_CHECK_EVERY", "interval of the gRPC servers' health checks", nil, &o.GRPCCheckEvery, nil},
		{"grpc-max-streams", "MESHD_GRPC_MAX_STREAMS", "calls one gRPC connection may have open at once (HTTP/2 max concurrent streams)", nil, nil, &o.GRPCMaxStreams},
		{"grpc-max-message-bytes", "MESHD_GRPC_MAX_MESSAGE_BYTES", "the largest gRPC message meshd takes or brings back; larger: ResourceExhausted", nil, nil, &o.GRPCMaxMessage},
		{"grpc-max-identities", "MESHD_GRPC_MAX_IDENTITIES", "callers (rpc-caller) one gRPC connection may call as, each proven and given its own connection into the relay", nil, nil, &o.GRPCMaxIdentities},
		{"grpc-max-header-list-bytes", "MESHD_GRPC_MAX_HEADER_LIST_BYTES", "the largest metadata of a gRPC call (HTTP/2 max header list size)", nil, nil, &o.GRPCMaxHeaderList},
	}
}

// ErrVersion is ParseOptions's answer to --version, after printing it.
var ErrVersion = errors.New("version requested")

// ParseOptions reads the options from a YAML file (--config or
// MESHD_CONFIG), then the environment, then args. It returns flag.ErrHelp
// after printing usage to out for -h/--help.
func ParseOptions(args []string, getenv func(string) string, out io.Writer) (Options, error) {
	o := Defaults()
	fs := flag.NewFlagSet("meshd", flag.ContinueOnError)
	fs.SetOutput(out)
	configPath := fs.String("config", getenv("MESHD_CONFIG"), "YAML config `file` (keys: the flag names with _ for -); env MESHD_CONFIG")
	showVersion := fs.Bool("version", false, "print meshd's version and commit, and exit")
	fs.Func("consul-token", "not accepted: use CONSUL_HTTP_TOKEN or --consul-token-file", func(string) error {
		return errors.New("a token on the command line is visible to every user of the host (ps, /proc/PID/cmdline): set CONSUL_HTTP_TOKEN or --consul-token-file instead")
	})
	table := o.table()
	for _, opt := range table {
		help := opt.help + "; env " + opt.env
		switch {
		case opt.str != nil:
			fs.StringVar(opt.str, opt.name, *opt.str, help)
		case opt.num != nil:
			fs.IntVar(opt.num, opt.name, *opt.num, help)
		default:
			fs.DurationVar(opt.dur, opt.name, *opt.dur, help)
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "meshd: the mesh daemon. Local apps advertise to it; it routes their calls to any host.\n\nUsage: meshd [flags]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if *showVersion {
		fmt.Fprintln(out, version.String("meshd"))
		return o, ErrVersion
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// Lower layers first, then re-apply the flags given on the command line.
	final := Defaults()
	if *configPath != "" {
		b, err := os.ReadFile(*configPath)
		if err != nil {
			return o, fmt.Errorf("config file: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&final); err != nil && !errors.Is(err, io.EOF) {
			return o, fmt.Errorf("config file %s: %w", *configPath, err)
		}
	}
	ftable := final.table()
	for i, opt := range ftable {
		if v := getenv(opt.env); v != "" && !set[opt.name] {
			switch {
			case opt.str != nil:
				*opt.str = v
			case opt.num != nil:
				n, err := strconv.Atoi(v)
				if err != nil {
					return o, fmt.Errorf("%s=%q: want a whole number", opt.env, v)
				}
				*opt.num = n
			default:
				d, err := time.ParseDuration(v)
				if err != nil {
					return o, fmt.Errorf("%s=%q: %w", opt.env, v, err)
				}
				*opt.dur = d
			}
		}
		if set[opt.name] {
			switch {
			case opt.str != nil:
				*opt.str = *table[i].str
			case opt.num != nil:
				*opt.num = *table[i].num
			default:
				*opt.dur = *table[i].dur
			}
		}
	}
	if v := getenv("CONSUL_HTTP_TOKEN"); v != "" {
		final.ConsulToken = v
	}
	if final.ConsulTokenFile != "" {
		b, err := os.ReadFile(final.ConsulTokenFile)
		if err != nil {
			return o, fmt.Errorf("--consul-token-file: %w", err)
		}
		final.ConsulToken = strings.TrimSpace(string(b))
	}
	return final, final.validate()
}

func (o Options) validate() error {
	if o.Listen == "" {
		return errors.New("--listen is empty")
	}
	for _, a := range []struct{ name, v string }{{"listen", o.Listen}, {"peer-listen", o.PeerListen}, {"advertise", o.Advertise}, {"admin", o.Admin}} {
		if a.v == "" || a.v == "off" && a.name == "admin" {
			continue // optional
		}
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("--%s %q: %w", a.name, a.v, err)
		}
	}
	if o.Pprof != "off" && o.Pprof != "on" {
		return fmt.Errorf("--pprof %q: want on or off", o.Pprof)
	}
	if o.OpsView != "off" && o.OpsView != "on" {
		return fmt.Errorf("--ops-view %q: want on or off", o.OpsView)
	}
	if o.GRPC != "off" && o.GRPC != "on" {
		return fmt.Errorf("--grpc %q: want on or off", o.GRPC)
	}
	if _, err := o.grpcServers(); err != nil {
		return err
	}
	if o.AdvertiseSameUser != "off" && o.AdvertiseSameUser != "on" {
		return fmt.Errorf("--advertise-same-user %q: want on or off", o.AdvertiseSameUser)
	}
	switch o.TLS {
	case "auto", "consul", "off":
	case "files":
		if o.TLSCert == "" || o.TLSKey == "" || o.TLSCA == "" {
			return errors.New("--tls files needs --tls-cert, --tls-key and --tls-ca")
		}
	default:
		return fmt.Errorf("--tls %q: want auto, consul, files or off", o.TLS)
	}
	if (o.TLSCert != "" || o.TLSKey != "" || o.TLSCA != "") && (o.TLSCert == "" || o.TLSKey == "" || o.TLSCA == "") {
		return errors.New("--tls-cert, --tls-key and --tls-ca go together")
	}
	if o.DefaultIntention != "" && o.DefaultIntention != "allow" && o.DefaultIntention != "deny" {
		return fmt.Errorf("--default-intention %q: want allow or deny", o.DefaultIntention)
	}
	if _, err := intentions.Compile(o.Intentions, true, true); err != nil {
		return err
	}
	if o.ConsulReads != "blocking" && o.ConsulReads != "cached" {
		return fmt.Errorf("--consul-reads %q: want blocking or cached", o.ConsulReads)
	}
	if o.LogFormat != "text" && o.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", o.LogFormat)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	if o.TraceQueryAPI != "jaeger" && o.TraceQueryAPI != "zipkin" {
		return fmt.Errorf("--trace-query-api %q: want jaeger or zipkin", o.TraceQueryAPI)
	}
	if o.TraceQuery != "" {
		if u, err := url.Parse(o.TraceQuery); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--trace-query %q: want an http(s) URL", o.TraceQuery)
		}
	}
	if o.ZipkinEnc != tracing.EncodingProto && o.ZipkinEnc != tracing.EncodingJSON {
		return fmt.Errorf("--zipkin-encoding %q: want proto or json", o.ZipkinEnc)
	}
	if r, err := strconv.ParseFloat(o.TraceRate, 64); err != nil || r < 0 || r > 1 {
		return fmt.Errorf("--trace-sample-rate %q: want a number from 0 to 1", o.TraceRate)
	}
	if o.ConsulTTL < time.Second {
		return fmt.Errorf("--consul-ttl %v: at least 1s", o.ConsulTTL)
	}
	for _, opt := range o.table() {
		if opt.num == &o.GCHeapFloor || opt.num == &o.Procs {
			if *opt.num < 0 {
				return fmt.Errorf("--%s must be 0 or more", opt.name)
			}
			continue
		}
		if opt.num != nil && *opt.num <= 0 || opt.dur != nil && opt.name != "consul-ttl" && opt.name != "drain-timeout" && *opt.dur <= 0 {
			return fmt.Errorf("--%s must be above 0", opt.name)
		}
	}
	return o.Policies.Validate()
}

// Logger builds the logger the options ask for.
func (o Options) Logger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(o.LogLevel))
	hopts := &slog.HandlerOptions{Level: lvl}
	if o.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, hopts))
	}
	return slog.New(slog.NewTextHandler(w, hopts))
}
