package thriftjson_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/meshrpc/mesh/internal/thriftjson"
)

func load(t *testing.T, name string) *thriftjson.Function {
	t.Helper()
	idl, err := thriftjson.Load("testdata/kv.thrift")
	if err != nil {
		t.Fatal(err)
	}
	f, err := idl.Function(name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The bytes are Thrift's binary protocol as the spec lays it out, checked
// by hand: field header (type 11 string, id 1), length, bytes, stop.
func TestArgsAreThriftBinary(t *testing.T) {
	b, err := load(t, "KV::get").EncodeArgs([]byte(`{"key": "a"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x0b, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 'a', 0x00}
	if !bytes.Equal(b, want) {
		t.Fatalf("% x, want % x", b, want)
	}
}

func same(t *testing.T, a, b []byte) {
	t.Helper()
	var x, y any
	json.Unmarshal(a, &x)
	json.Unmarshal(b, &y)
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	if !bytes.Equal(xa, ya) {
		t.Fatalf("%s\n!= %s", xa, ya)
	}
}

// Every type goes to binary and back to the same JSON.
func TestEveryTypeRoundTrips(t *testing.T) {
	put := load(t, "KV::put")
	in := []byte(`{"item": {"key": "k", "version": 9007199254740993, "tags": ["a", "b"], "counts": {"x": 1, "y": -2},
		"byID": [[7, "seven"], [8, "eight"]], "color": "GREEN", "blob": "AAEC", "weight": 1.5, "small": [3]}}`)
	b, err := put.EncodeArgs(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := put.DecodeArgs(b)
	if err != nil {
		t.Fatal(err)
	}
	same(t, out, in)
	if !strings.Contains(string(out), "9007199254740993") {
		t.Fatalf("i64 lost precision: %s", out)
	}
}

func TestResultsAndExceptions(t *testing.T) {
	get := load(t, "KV::get")
	res, err := get.EncodeResult([]byte(`{"key": "k", "version": 2}`), "")
	if err != nil {
		t.Fatal(err)
	}
	js, exc, err := get.DecodeResult(res)
	if err != nil || exc != "" {
		t.Fatal(exc, err)
	}
	same(t, js, []byte(`{"key": "k", "version": 2}`))
	res, err = get.EncodeResult([]byte(`{"key": "gone"}`), "notFound")
	if err != nil {
		t.Fatal(err)
	}
	if js, exc, err = get.DecodeResult(res); err != nil || exc != "notFound" || !strings.Contains(string(js), "gone") {
		t.Fatalf("exception: %s %q %v", js, exc, err)
	}
	ping := load(t, "KV::ping") // from the service KV extends
	res, err = ping.EncodeResult([]byte(`"pong"`), "")
	if err != nil {
		t.Fatal(err)
	}
	if js, _, _ := ping.DecodeResult(res); string(js) != `"pong"` {
		t.Fatalf("ping: %s", js)
	}
}

func TestBadInputSaysWhere(t *testing.T) {
	idl, err := thriftjson.Load("testdata/kv.thrift")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ fn, in, err string }{
		{"KV::put", `{"item": {"key": 1}}`, "put arguments.item.key: want a string, got a number"},
		{"KV::put", `{"item": {}}`, `field "key" is required`},
		{"KV::put", `{"item": {"key": "k", "color": "BLUE"}}`, `enum Color has no item "BLUE"`},
		{"KV::put", `{"itme": {}}`, `no field "itme" (there are item)`},
		{"KV::put", `{"item": {"key": "k", "small": [70000]}}`, "want an i16"},
		{"KV::put", `[1]`, "want a JSON object"},
		{"KV::nope", `{}`, `no method "nope"`},
		{"Nope::get", `{}`, `no service "Nope"`},
		{"get", `{}`, "want Service::method"},
	} {
		f, err := idl.Function(tc.fn)
		if err == nil {
			_, err = f.EncodeArgs([]byte(tc.in))
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s %s: %v, want %q", tc.fn, tc.in, err, tc.err)
		}
	}
	if _, err := thriftjson.Load("testdata/nosuch.thrift"); err == nil {
		t.Error("a missing IDL loaded")
	}
}
