package client_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/uber/tchannel-go"
	athrift "github.com/uber/tchannel-go/thirdparty/github.com/apache/thrift/lib/go/thrift"
	tthrift "github.com/uber/tchannel-go/thrift"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/thriftjson"
)

// The IDL both sides follow (what thrift-gen would compile for tchannel-go).
const kvThrift = `
struct Item { 1: required string key  2: optional i64 version }
exception NotFound { 1: string key }
service KV { Item get(1: string key) throws (1: NotFound notFound) }
`

// kvServer is tchannel-go's side of KV, written as its generated code would
// be: it reads the args struct and writes the result struct.
type kvServer struct{}

func (kvServer) Service() string   { return "KV" }
func (kvServer) Methods() []string { return []string{"get"} }
func (kvServer) Handle(ctx tthrift.Context, method string, p athrift.TProtocol) (bool, athrift.TStruct, error) {
	var a kvGetArgs
	if err := a.Read(p); err != nil {
		return false, nil, err
	}
	ctx.SetResponseHeaders(map[string]string{"seen": a.key})
	if a.key == "missing" {
		return false, &kvGetResult{notFound: &a.key}, nil
	}
	return true, &kvGetResult{success: &item{key: a.key, version: 7}}, nil
}

type kvGetArgs struct{ key string }

func (a *kvGetArgs) Read(p athrift.TProtocol) error {
	return readStruct(p, func(id int16, t athrift.TType) (bool, error) {
		if id == 1 && t == athrift.STRING {
			var err error
			a.key, err = p.ReadString()
			return true, err
		}
		return false, nil
	})
}

func (a *kvGetArgs) Write(p athrift.TProtocol) error {
	p.WriteStructBegin("get_args")
	p.WriteFieldBegin("key", athrift.STRING, 1)
	p.WriteString(a.key)
	p.WriteFieldEnd()
	p.WriteFieldStop()
	return p.WriteStructEnd()
}

type item struct {
	key     string
	version int64
}

func (it *item) write(p athrift.TProtocol) {
	p.WriteStructBegin("Item")
	p.WriteFieldBegin("key", athrift.STRING, 1)
	p.WriteString(it.key)
	p.WriteFieldEnd()
	p.WriteFieldBegin("version", athrift.I64, 2)
	p.WriteI64(it.version)
	p.WriteFieldEnd()
	p.WriteFieldStop()
	p.WriteStructEnd()
}

func (it *item) read(p athrift.TProtocol) error {
	return readStruct(p, func(id int16, t athrift.TType) (bool, error) {
		var err error
		switch {
		case id == 1 && t == athrift.STRING:
			it.key, err = p.ReadString()
		case id == 2 && t == athrift.I64:
			it.version, err = p.ReadI64()
		default:
			return false, nil
		}
		return true, err
	})
}

type kvGetResult struct {
	success  *item
	notFound *string
}

func (r *kvGetResult) Write(p athrift.TProtocol) error {
	p.WriteStructBegin("get_result")
	if r.success != nil {
		p.WriteFieldBegin("success", athrift.STRUCT, 0)
		r.success.write(p)
		p.WriteFieldEnd()
	}
	if r.notFound != nil {
		p.WriteFieldBegin("notFound", athrift.STRUCT, 1)
		p.WriteStructBegin("NotFound")
		p.WriteFieldBegin("key", athrift.STRING, 1)
		p.WriteString(*r.notFound)
		p.WriteFieldEnd()
		p.WriteFieldStop()
		p.WriteStructEnd()
		p.WriteFieldEnd()
	}
	p.WriteFieldStop()
	return p.WriteStructEnd()
}

func (r *kvGetResult) Read(p athrift.TProtocol) error {
	return readStruct(p, func(id int16, t athrift.TType) (bool, error) {
		switch {
		case id == 0 && t == athrift.STRUCT:
			r.success = &item{}
			return true, r.success.read(p)
		case id == 1 && t == athrift.STRUCT:
			var nf item
			err := nf.read(p)
			r.notFound = &nf.key
			return true, err
		}
		return false, nil
	})
}

// readStruct reads a struct's fields, giving each to field, which reports
// whether it read it (else it is skipped).
func readStruct(p athrift.TProtocol, field func(id int16, t athrift.TType) (bool, error)) error {
	if _, err := p.ReadStructBegin(); err != nil {
		return err
	}
	for {
		_, t, id, err := p.ReadFieldBegin()
		if err != nil {
			return err
		}
		if t == athrift.STOP {
			break
		}
		read, err := field(id, t)
		if err != nil {
			return err
		}
		if !read {
			if err := p.Skip(t); err != nil {
				return err
			}
		}
		if err := p.ReadFieldEnd(); err != nil {
			return err
		}
	}
	return p.ReadStructEnd()
}

func kvFunction(t *testing.T) *thriftjson.Function {
	t.Helper()
	path := t.TempDir() + "/kv.thrift"
	if err := os.WriteFile(path, []byte(kvThrift), 0o644); err != nil {
		t.Fatal(err)
	}
	idl, err := thriftjson.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := idl.Function("KV::get")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The SDK calls a tchannel-go Thrift server, arguments and result in JSON
// through the IDL: a result, its headers, and a declared exception.
func TestThriftCallToTChannelGo(t *testing.T) {
	ch, err := tchannel.NewChannel("kv", nil)
	if err != nil {
		t.Fatal(err)
	}
	tthrift.NewServer(ch).Register(kvServer{})
	if err := ch.ListenAndServe("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	fn := kvFunction(t)
	c := dial(t, ch.PeerInfo().HostPort, client.Options{ServiceName: "sdk", Logger: testkit.Quiet})
	call := func(js string) (string, map[string]string, bool) {
		args, err := fn.EncodeArgs([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, hdrs, exc, err := c.CallThrift(ctx, "kv", "KV::get", map[string]string{"h": "1"}, args)
		if err != nil {
			t.Fatal(err)
		}
		out, name, err := fn.DecodeResult(res)
		if err != nil || exc != (name != "") {
			t.Fatalf("result: %s %q %v (exception flag %v)", out, name, err, exc)
		}
		return string(out), hdrs, exc
	}
	if out, hdrs, exc := call(`{"key": "a"}`); exc || out != `{"key":"a","version":7}` || hdrs["seen"] != "a" {
		t.Fatalf("get a: %s %v exception=%v", out, hdrs, exc)
	}
	if out, _, exc := call(`{"key": "missing"}`); !exc || out != `{"key":"missing"}` {
		t.Fatalf("get missing: %s exception=%v", out, exc)
	}
}

// A tchannel-go Thrift client calls an SDK server whose handler works in
// JSON through the IDL: straight, and through a meshd the server advertised
// to (which relays the thrift scheme as it is).
func TestTChannelGoThriftClientCallsSDK(t *testing.T) {
	for _, via := range []string{"direct", "meshd"} {
		t.Run(via, func(t *testing.T) { thriftClientCallsSDK(t, via == "meshd") })
	}
}

func thriftClientCallsSDK(t *testing.T, viaMeshd bool) {
	fn := kvFunction(t)
	s := client.NewServer(client.Options{Logger: testkit.Quiet})
	s.Register("kv", "KV::get", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		args, err := fn.DecodeArgs(call.Body)
		if err != nil {
			return nil, err
		}
		key := strings.TrimSuffix(strings.TrimPrefix(string(args), `{"key":"`), `"}`)
		if key == "missing" {
			res, err := fn.EncodeResult([]byte(`{"key":"missing"}`), "notFound")
			if err != nil {
				return nil, err
			}
			return nil, client.ThriftException(res)
		}
		res, err := fn.EncodeResult([]byte(`{"key":"`+key+`","version":9}`), "")
		if err != nil {
			return nil, err
		}
		return &client.Response{Headers: client.ThriftHeaders(map[string]string{"from": "sdk"}), Body: res}, nil
	}))
	var addr string
	if viaMeshd {
		addr = localMeshd()
		if err := s.Advertise(context.Background(), addr); err != nil {
			t.Fatal(err)
		}
		defer s.Shutdown(context.Background())
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(l)
		defer s.Shutdown(context.Background())
		addr = l.Addr().String()
	}
	ch, err := tchannel.NewChannel("tgo-caller", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ch.Peers().Add(addr)
	tc := tthrift.NewClient(ch, "kv", nil)
	ctx, cancel := tthrift.NewContext(5 * time.Second)
	defer cancel()
	var res kvGetResult
	ok, err := tc.Call(ctx, "KV", "get", &kvGetArgs{key: "b"}, &res)
	if err != nil || !ok || res.success == nil || res.success.key != "b" || res.success.version != 9 {
		t.Fatalf("get b: ok=%v %+v %v", ok, res.success, err)
	}
	if got := ctx.ResponseHeaders()["from"]; got != "sdk" {
		t.Fatalf("response headers %v", ctx.ResponseHeaders())
	}
	res = kvGetResult{}
	ok, err = tc.Call(ctx, "KV", "get", &kvGetArgs{key: "missing"}, &res)
	if err != nil || ok || res.notFound == nil || *res.notFound != "missing" {
		t.Fatalf("get missing: ok=%v %+v %v", ok, res, err)
	}
	var unknown kvGetResult
	if _, err := tc.Call(ctx, "KV", "nosuch", &kvGetArgs{}, &unknown); err == nil {
		t.Fatal("a method the server does not have answered")
	}
}

func TestThriftHeaders(t *testing.T) {
	h := map[string]string{"b": "2", "a": "1"}
	got, err := client.ParseThriftHeaders(client.ThriftHeaders(h))
	if err != nil || len(got) != 2 || got["a"] != "1" || got["b"] != "2" {
		t.Fatalf("round trip: %v %v", got, err)
	}
	for _, bad := range [][]byte{{0}, {0, 1, 0, 5, 'a'}, {0, 1, 0, 1, 'a'}, {0, 0, 9}} {
		if _, err := client.ParseThriftHeaders(bad); err == nil {
			t.Errorf("% x: no error", bad)
		}
	}
}
