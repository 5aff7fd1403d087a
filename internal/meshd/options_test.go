package meshd

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/router"
)

// Apps find meshd where it listens by default (client.LocalAddr, meshctl).
func TestDefaultListenIsTheSDKs(t *testing.T) {
	o, err := ParseOptions(nil, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Listen != client.LocalTCP {
		t.Fatalf("meshd listens at %q by default; the SDK looks at %q", o.Listen, client.LocalTCP)
	}
}

func TestParseOptionsPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "meshd.yaml")
	os.WriteFile(file, []byte("listen: 127.0.0.9:1\nadmin: \"off\"\nconsul_ttl: 7s\nlog_format: json\nnode: from-file\nmax_ttl: 1m\nmax_calls_per_connection: 50\npolicies:\n  kv: {max_attempts: 2, caller_rate_limit: 100, try_timeout: 150ms}\n"), 0o644)
	env := map[string]string{"MESHD_CONFIG": file, "MESHD_NODE": "from-env", "MESHD_LOG_LEVEL": "debug", "MESHD_MAX_CALLS_PER_CONNECTION": "60", "MESHD_MAX_CONNECTIONS": "70"}
	o, err := ParseOptions([]string{"--log-level", "warn", "--max-connections", "80"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Listen, want.Admin, want.ConsulTTL, want.LogFormat = "127.0.0.9:1", "off", 7*time.Second, "json" // file
	want.Node = "from-env"                                                                                // env over file
	want.LogLevel = "warn"                                                                                // flag over env
	want.MaxTTL, want.MaxCallsPerConn, want.MaxConns = time.Minute, 60, 80                                // file; env over file; flag over env
	want.Policies = router.Policies{"kv": {MaxAttempts: 2, CallerRateLimit: 100, TryTimeout: router.Duration(150 * time.Millisecond)}}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("got  %+v\nwant %+v", o, want)
	}
}

// The Consul token comes from CONSUL_HTTP_TOKEN or a file, never argv, and
// never shows in --help.
func TestConsulTokenSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("from-file\n"), 0o600)
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"CONSUL_HTTP_TOKEN": "from-env"}, "from-env"},
		{[]string{"--consul-token-file", file}, map[string]string{"CONSUL_HTTP_TOKEN": "from-env"}, "from-file"},
		{nil, map[string]string{"MESHD_CONSUL_TOKEN_FILE": file}, "from-file"},
	} {
		o, err := ParseOptions(tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
		if err != nil || o.ConsulToken != tc.want {
			t.Errorf("%v %v: token %q, %v; want %q", tc.args, tc.env, o.ConsulToken, err, tc.want)
		}
	}
}

func TestParseOptionsErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listen: 1.2.3.4:5\nno_such_key: 1\n"), 0o644)
	badPolicy := filepath.Join(dir, "badpolicy.yaml")
	os.WriteFile(badPolicy, []byte("policies:\n  kv: {rate_limit: -3}\n"), 0o644)
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--listen", "nonsense"}, nil, "--listen"},
		{[]string{"--log-format", "xml"}, nil, "--log-format"},
		{[]string{"--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--consul-ttl", "100ms"}, nil, "--consul-ttl"},
		{[]string{"--zipkin-encoding", "thrift"}, nil, "--zipkin-encoding"},
		{[]string{"--trace-sample-rate", "2"}, nil, "--trace-sample-rate"},
		{nil, map[string]string{"MESHD_DRAIN_TIMEOUT": "soon"}, "MESHD_DRAIN_TIMEOUT"},
		{[]string{"--config", bad}, nil, "no_such_key"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, nil, "config file"},
		{[]string{"stray"}, nil, "unexpected arguments"},
		{[]string{"--config", badPolicy}, nil, `policy of "kv"`},
		{[]string{"--max-ttl", "0s"}, nil, "--max-ttl must be above 0"},
		{[]string{"--max-half-sent-per-caller", "-1"}, nil, "--max-half-sent-per-caller must be above 0"},
		{nil, map[string]string{"MESHD_MAX_CONNECTIONS": "many"}, "MESHD_MAX_CONNECTIONS"},
		{[]string{"--consul-token", "s3cret"}, nil, "CONSUL_HTTP_TOKEN or --consul-token-file"},
		{[]string{"--consul-token-file", filepath.Join(dir, "missing-token")}, nil, "--consul-token-file"},
		{[]string{"--pprof", "yes"}, nil, "--pprof"},
		{[]string{"--procs", "-1"}, nil, "--procs must be 0 or more"},
		{[]string{"--ops-view", "maybe"}, nil, "--ops-view"},
		{[]string{"--consul-reads", "eventual"}, nil, "--consul-reads"},
	}
	for _, tc := range cases {
		_, err := ParseOptions(tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: error %v, want one mentioning %q", tc.args, tc.env, err, tc.want)
		}
	}
	var ver bytes.Buffer
	if _, err := ParseOptions([]string{"--version"}, func(string) string { return "" }, &ver); !errors.Is(err, ErrVersion) || !strings.HasPrefix(ver.String(), "meshd ") {
		t.Fatalf("--version: %v, printed %q", err, ver.String())
	}
	var help bytes.Buffer
	if _, err := ParseOptions([]string{"--help"}, func(string) string { return "" }, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, opt := range (&Options{}).table() {
		if !strings.Contains(help.String(), "-"+opt.name) || !strings.Contains(help.String(), opt.env) {
			t.Errorf("--help does not explain %s (%s)", opt.name, opt.env)
		}
	}
}

func TestUseProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(4)
	cases := []struct {
		procs int
		env   string
		want  int
	}{
		{0, "", 2},  // half of the 4 it may use
		{3, "", 3},  // asked for
		{0, "4", 4}, // GOMAXPROCS in the environment: the runtime's
		{5, "4", 5}, // the flag over the environment
	}
	for _, tc := range cases {
		runtime.GOMAXPROCS(4)
		got := UseProcs(Options{Procs: tc.procs}, func(k string) string {
			if k == "GOMAXPROCS" {
				return tc.env
			}
			return ""
		})
		if got != tc.want || runtime.GOMAXPROCS(0) != tc.want {
			t.Errorf("procs %d, GOMAXPROCS=%q: %d (runtime %d), want %d", tc.procs, tc.env, got, runtime.GOMAXPROCS(0), tc.want)
		}
	}
	runtime.GOMAXPROCS(1)
	if got := UseProcs(Options{}, func(string) string { return "" }); got != 1 {
		t.Errorf("one CPU: %d, want 1 (never 0)", got)
	}
}
