package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/meshrpc/mesh/client"
)

func TestParseFlagsAnywhere(t *testing.T) {
	o, pos, err := parse([]string{"call", "--via", "h:1", "kv", "get", "-H", "a=b", `{"key":"x"}`, "--json", "--shard-key", "k"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.via != "h:1" || !o.json || o.headers["a"] != "b" || o.shardKey != "k" || strings.Join(pos, " ") != `call kv get {"key":"x"}` {
		t.Fatalf("parsed %+v %q", o, pos)
	}
	if _, _, err := parse([]string{"call", "s", "m", "--json", "--raw"}, nil); err == nil {
		t.Fatal("accepted --json with --raw")
	}
	if _, _, err := parse([]string{"call", "-H", "novalue"}, nil); err == nil {
		t.Fatal("accepted a header without =")
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
