package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/loadgen"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/protojson"
	"github.com/meshrpc/mesh/internal/thriftjson"
)

// parsed runs meshctl's flag parsing on args (a command that is not run)
// and returns what the flags set.
func parsed(args ...string) (*opts, error) {
	root, o := newRoot(strings.NewReader(""), io.Discard, io.Discard)
	c, rest, err := root.Find(args)
	if err != nil {
		return nil, err
	}
	if err := c.ParseFlags(rest); err != nil {
		return nil, err
	}
	return o, c.ValidateArgs(c.Flags().Args())
}

func TestParseFlagsAnywhere(t *testing.T) {
	o, err := parsed("call", "--via", "h:1", "kv", "get", "-H", "a=b", `{"key":"x"}`, "--json", "--shard-key", "k", "--rk", "proxy", "--caller", "me")
	if err != nil {
		t.Fatal(err)
	}
	if o.via != "h:1" || !o.json || o.headers["a"] != "b" || o.shardKey != "k" || o.routeKey != "proxy" || o.caller != "me" {
		t.Fatalf("parsed %+v", o)
	}
	if _, err := parsed("call", "-H", "novalue", "s", "m"); err == nil {
		t.Fatal("accepted a header without =")
	}
	for _, tc := range []struct{ flag, key, value string }{
		{"a=b", "a", "b"}, {"a: b", "a", "b"}, {"url: http://x:1/?q=1", "url", "http://x:1/?q=1"}, {"k=v:w", "k", "v:w"}, {"e=", "e", ""},
	} {
		o, err := parsed("call", "s", "m", "-H", tc.flag)
		if err != nil || len(o.headers) != 1 || o.headers[tc.key] != tc.value {
			t.Errorf("-H %q: %v %v", tc.flag, o, err)
		}
	}
	for _, tc := range []struct {
		flag string
		want time.Duration
		err  string
	}{
		{"250ms", 250 * time.Millisecond, ""}, {"100", 100 * time.Millisecond, ""}, {"1.5s", 1500 * time.Millisecond, ""},
		{"1ns", 0, "at least 1ms"}, {"0", 0, "at least 1ms"}, {"soon", 0, "want a duration"},
	} {
		o, err := parsed("status", "--timeout", tc.flag)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("--timeout %s: %v, want %q", tc.flag, err, tc.err)
			}
		} else if err != nil || o.timeout != tc.want {
			t.Errorf("--timeout %s: %v %v", tc.flag, o, err)
		}
	}
}

func TestRunExitCodes(t *testing.T) {
	s := client.NewServer(client.Options{})
	s.Register("svc", "echo", client.HandlerFunc(func(ctx context.Context, c *client.Call) (*client.Response, error) {
		return &client.Response{Body: c.Body}, nil
	}))
	s.Register("svc", "fail", client.HandlerFunc(func(ctx context.Context, c *client.Call) (*client.Response, error) {
		return nil, &client.ApplicationError{Body: []byte("nope")}
	}))
	s.Register("svc", "arg2", client.HandlerFunc(func(ctx context.Context, c *client.Call) (*client.Response, error) {
		return &client.Response{Body: c.Headers}, nil // what the raw call's arg2 held
	}))
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(l)
	defer s.Shutdown(context.Background())
	via := l.Addr().String()
	cases := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"call", "svc", "echo", "hi", "--via", via}, exitOK, "hi\n", ""},
		{[]string{"call", "svc", "echo", `{"a": 1}`, "--via", via}, exitOK, "{\n  \"a\": 1\n}\n", ""},
		{[]string{"call", "svc", "fail", "x", "--raw", "--via", via}, exitCallFailed, "", "application error: nope"},
		{[]string{"call", "svc", "nosuch", "--via", via}, exitCallFailed, "", "bad request (code 0x06)"},
		{[]string{"call", "svc", "--via", via}, exitUsage, "", "wrong number of arguments"},
		{[]string{"frobnicate"}, exitUsage, "", "unknown command"},
		{[]string{"status", "--via", "127.0.0.1:1"}, exitUnreachable, "", "cannot reach meshd"},
		{[]string{"version"}, exitOK, "meshctl ", ""},
		{[]string{"call", "--help"}, exitOK, "--shard-key", ""},
		{[]string{"bench", "--help"}, exitOK, "--rps", ""},
		{[]string{"--help"}, exitOK, "Exit status: 0 ok", ""},
		{[]string{"completion", "bash"}, exitOK, "bash completion", ""},
		{[]string{"completion", "zsh"}, exitOK, "compdef", ""},
		{[]string{"call", "svc", "echo", "hi", "--timeout", "1ns", "--via", via}, exitUsage, "", "at least 1ms"},
		{[]string{"call", "svc", "echo", "hi", "--nosuchflag"}, exitUsage, "", "unknown flag"},
		{[]string{"call", "svc", "fail", "notjson", "--via", via}, exitCallFailed, "", "it went raw"},
		{[]string{"call", "svc", "arg2", "x", "--raw", "-H", "a: b", "--via", via}, exitOK, `{"a":"b"}`, ""},
		{[]string{"--version"}, exitOK, "(commit ", ""},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := run(tc.args, strings.NewReader(""), &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("%v: exit %d, out %q, err %q; want exit %d, out %q, err containing %q",
				tc.args, code, out.String(), errb.String(), tc.code, tc.out, tc.err)
		}
	}
}

// meshctl bench straight at a TChannel peer: the counts, the JSON for
// scripts, errors by code and the exit status they give.
func TestBench(t *testing.T) {
	s := client.NewServer(client.Options{})
	s.Register("svc", "echo", client.HandlerFunc(func(ctx context.Context, c *client.Call) (*client.Response, error) {
		return &client.Response{Body: c.Body}, nil
	}))
	s.Register("svc", "fail", client.HandlerFunc(func(ctx context.Context, c *client.Call) (*client.Response, error) {
		return nil, &client.ApplicationError{Body: []byte("nope")}
	}))
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(l)
	defer s.Shutdown(context.Background())
	via := l.Addr().String()
	result := func(args ...string) (loadgen.Result, int, string) {
		var out, errb bytes.Buffer
		code := run(append(args, "--via", via, "--warmup", "0s"), strings.NewReader(""), &out, &errb)
		var r loadgen.Result
		if strings.Contains(strings.Join(args, " "), "-o json") {
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("%v: not JSON: %q (%s)", args, out.String(), errb.String())
			}
		}
		return r, code, out.String() + errb.String()
	}
	if r, code, _ := result("bench", "svc", "echo", "x", "-n", "300", "-c", "4", "-o", "json"); code != exitOK || r.Calls != 300 || r.Errors != 0 || r.Latency.P50 <= 0 {
		t.Fatalf("300 echo calls: exit %d, %+v", code, r)
	}
	if r, code, _ := result("bench", "svc", "echo", "x", "-d", "500ms", "--rps", "200", "-o", "json"); code != exitOK || r.Calls < 80 || r.Calls > 101 || !strings.Contains(r.Mode, "open loop at 200 calls/s") {
		t.Fatalf("open loop 200/s for 500ms: exit %d, %+v", code, r)
	}
	if r, code, _ := result("bench", "svc", "fail", "x", "-n", "10", "-o", "json"); code != exitCallFailed || r.ErrorsBy["application"] != 10 {
		t.Fatalf("10 failing calls: exit %d, %+v", code, r)
	}
	if _, code, text := result("bench", "svc", "nosuch", "-n", "5"); code != exitCallFailed || !strings.Contains(text, "errors: bad request 5") || !strings.Contains(text, "p99.9") {
		t.Fatalf("text output: exit %d\n%s", code, text)
	}
	for _, bad := range [][]string{{"bench", "svc", "echo", "-n", "5", "-d", "1s"}, {"bench", "svc", "echo", "-o", "yaml"}, {"bench", "svc", "echo", "-c", "0"}} {
		if _, code, _ := result(bad...); code != exitUsage {
			t.Errorf("%v: exit %d, want usage", bad, code)
		}
	}
}

// instances of a service with none says so: [] on stdout, a line on
// stderr, exit 1 (as grep finding nothing), not "null" and 0.
func TestInstancesOfNoService(t *testing.T) {
	d, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(context.Background())
	var out, errb bytes.Buffer
	code := run([]string{"instances", "nosuch", "--via", d.Addr()}, strings.NewReader(""), &out, &errb)
	if code != exitCallFailed || strings.TrimSpace(out.String()) != "[]" || !strings.Contains(errb.String(), `no healthy instances of "nosuch"`) {
		t.Fatalf("exit %d, out %q, err %q", code, out.String(), errb.String())
	}
}

// meshctl call --thrift: JSON in, the IDL's binary on the wire, JSON out;
// a declared exception is an error naming it; a wrong argument is a usage
// error saying which.
func TestCallThrift(t *testing.T) {
	idlPath := t.TempDir() + "/kv.thrift"
	os.WriteFile(idlPath, []byte(`exception NotFound { 1: string key }
service KV { map<string, i64> get(1: string key) throws (1: NotFound notFound) }`), 0o644)
	idl, err := thriftjson.Load(idlPath)
	if err != nil {
		t.Fatal(err)
	}
	fn, _ := idl.Function("KV::get")
	s := client.NewServer(client.Options{})
	s.Register("kv", "KV::get", client.HandlerFunc(func(ctx context.Context, c *client.Call) (*client.Response, error) {
		args, err := fn.DecodeArgs(c.Body)
		if err != nil {
			return nil, err
		}
		if strings.Contains(string(args), "missing") {
			res, _ := fn.EncodeResult([]byte(`{"key":"missing"}`), "notFound")
			return nil, client.ThriftException(res)
		}
		res, err := fn.EncodeResult([]byte(`{"a": 1, "b": 9007199254740993}`), "")
		return &client.Response{Headers: client.ThriftHeaders(map[string]string{"echo": "yes"}), Body: res}, err
	}))
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(l)
	defer s.Shutdown(context.Background())
	via := l.Addr().String()
	for _, tc := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"call", "kv", "KV::get", `{"key": "k"}`, "--thrift", idlPath, "-H", "x: 1"}, exitOK, `"b": 9007199254740993`, "< echo: yes"},
		{[]string{"call", "kv", "KV::get", `{"key": "missing"}`, "--thrift", idlPath}, exitCallFailed, "", `KV::get raised notFound: {"key":"missing"}`},
		{[]string{"call", "kv", "KV::get", `{"key": 5}`, "--thrift", idlPath}, exitUsage, "", "get arguments.key: want a string"},
		{[]string{"call", "kv", "KV::put", `{}`, "--thrift", idlPath}, exitUsage, "", `no method "put"`},
		{[]string{"call", "kv", "KV::get", `{}`, "--thrift", idlPath, "--raw"}, exitUsage, "", "exclude each other"},
	} {
		var out, errb bytes.Buffer
		code := run(append(tc.args, "--via", via), strings.NewReader(""), &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("%v: exit %d, out %q, err %q; want %d, %q, %q", tc.args, code, out.String(), errb.String(), tc.code, tc.out, tc.err)
		}
	}
}

// meshctl calls anonymous unless --as proves a name (here by meshd's rule
// for its own Unix user): under "* => echo allow" with default deny it is
// refused anonymous and answered as web, and --explain says who it was.
func TestCallAsAProvenIdentity(t *testing.T) {
	set, err := intentions.Compile([]intentions.Rule{{Source: "*", Destination: "echo", Action: "allow"}}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: slog.New(slog.DiscardHandler), Intentions: intentions.NewTable(set)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(context.Background())
	srv := client.NewServer(client.Options{ServiceName: "echo", Logger: slog.New(slog.DiscardHandler)})
	srv.Register("echo", "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: call.Body}, nil
	}))
	if err := srv.Advertise(context.Background(), d.Addr()); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())

	var out, errb bytes.Buffer
	if code := run([]string{"call", "echo", "echo", "hi", "--raw", "--via", d.Addr()}, strings.NewReader(""), &out, &errb); code == exitOK || !strings.Contains(errb.String(), "default deny for anonymous callers") {
		t.Fatalf("anonymous: exit %d, %q", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	code := run([]string{"call", "echo", "echo", "hi", "--raw", "--as", "web", "--explain", "--via", d.Addr()}, strings.NewReader(""), &out, &errb)
	if code != exitOK || strings.TrimSpace(out.String()) != "hi" || !strings.Contains(errb.String(), `meshctl called as "web"`) || !strings.Contains(errb.String(), `from "web"`) {
		t.Fatalf("--as web: exit %d, %q %q", code, out.String(), errb.String())
	}
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	if code := run([]string{"call", "echo", "echo", "hi", "--as", "web", "--token-file", "/nonexistent", "--via", d.Addr()}, strings.NewReader(""), &out, &errb); code != exitUsage {
		t.Fatalf("a token file that does not exist: exit %d", code)
	}
}

// meshctl call --proto: JSON in, protobuf on the wire in the proto
// encoding, JSON out; gRPC's path names the method too; an application
// error is an error with its message; a bad field, an unknown or a
// streaming method are usage errors saying which.
func TestCallProto(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/kv.proto", []byte(`syntax = "proto3";
package kv;
import "google/protobuf/timestamp.proto";
message GetRequest { string key = 1; }
message GetResponse { string value = 1; int64 version = 2; repeated string tags = 3; google.protobuf.Timestamp at = 4; }
service KV {
  rpc Get(GetRequest) returns (GetResponse);
  rpc Watch(GetRequest) returns (stream GetResponse);
}`), 0o644)
	idl, err := protojson.Load(dir + "/kv.proto")
	if err != nil {
		t.Fatal(err)
	}
	get, err := idl.Method("kv.KV::Get")
	if err != nil {
		t.Fatal(err)
	}
	s := client.NewServer(client.Options{})
	s.Register("kv", "kv.KV::Get", client.HandlerFunc(func(ctx context.Context, c *client.Call) (*client.Response, error) {
		req, err := get.DecodeRequest(c.Body)
		if err != nil {
			return nil, client.Errorf(frame.ErrCodeBadRequest, "%v", err)
		}
		if strings.Contains(string(req), "missing") {
			return nil, &client.ApplicationError{Headers: client.ThriftHeaders(map[string]string{"error": "no key \"missing\""})}
		}
		h, _ := client.ParseThriftHeaders(c.Headers)
		res, err := get.EncodeResponse([]byte(`{"value": "v-` + h["x"] + `", "version": "9007199254740993", "tags": ["a"], "at": "2026-12-03T10:00:00Z"}`))
		return &client.Response{Headers: client.ThriftHeaders(map[string]string{"echo": "yes"}), Body: res}, err
	}))
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(l)
	defer s.Shutdown(context.Background())
	via := l.Addr().String()
	file := dir + "/kv.proto"
	for _, tc := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"call", "kv", "kv.KV::Get", `{"key": "k"}`, "--proto", file, "-H", "x: 1"}, exitOK, `"version": "9007199254740993"`, "< echo: yes"},
		{[]string{"call", "kv", "/kv.KV/Get", `{"key": "k"}`, "--proto", file}, exitOK, `"at": "2026-12-03T10:00:00Z"`, ""},
		{[]string{"call", "kv", "kv.KV::Get", `{"key": "missing"}`, "--proto", file}, exitCallFailed, "", `kv.KV::Get: no key "missing"`},
		{[]string{"call", "kv", "kv.KV::Get", `{"key": 5}`, "--proto", file}, exitUsage, "", "kv.GetRequest"},
		{[]string{"call", "kv", "kv.KV::Put", `{}`, "--proto", file}, exitUsage, "", `no method "kv.KV::Put"`},
		{[]string{"call", "kv", "kv.KV::Watch", `{}`, "--proto", file}, exitUsage, "", "streams"},
		{[]string{"call", "kv", "kv.KV::Get", `{}`, "--proto", file, "--json"}, exitUsage, "", "exclude each other"},
		{[]string{"call", "kv", "kv.KV::Get", `{}`, "--proto", dir + "/nosuch.proto"}, exitUsage, "", "nosuch.proto"},
	} {
		var out, errb bytes.Buffer
		code := run(append(tc.args, "--via", via), strings.NewReader(""), &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("%v: exit %d, out %q, err %q; want %d, %q, %q", tc.args, code, out.String(), errb.String(), tc.code, tc.out, tc.err)
		}
	}
}
