package protojson

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A request and a response go to protobuf and back through JSON, with a
// message imported from a file beside the one loaded.
func TestRoundTrip(t *testing.T) {
	dir := write(t, map[string]string{
		"types.proto": `syntax = "proto3"; package shop; message Item { string sku = 1; uint32 count = 2; }`,
		"shop.proto": `syntax = "proto3"; package shop; import "types.proto";
message Order { repeated Item items = 1; map<string, string> notes = 2; }
message Receipt { string id = 1; }
service Shop { rpc Buy(Order) returns (Receipt); }`,
	})
	idl, err := Load(filepath.Join(dir, "shop.proto"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := idl.Method("/shop.Shop/Buy")
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.EncodeRequest([]byte(`{"items": [{"sku": "a-1", "count": 2}], "notes": {"gift": "yes"}}`))
	if err != nil {
		t.Fatal(err)
	}
	js, err := m.DecodeRequest(b)
	if err != nil || !strings.Contains(string(js), `"sku":"a-1"`) || !strings.Contains(string(js), `"gift":"yes"`) {
		t.Fatalf("decoded %s, %v", js, err)
	}
	if _, err := m.DecodeResponse([]byte{0x0a, 0xff}); err == nil {
		t.Fatal("a cut-short response decoded")
	}
}

func TestLoadErrors(t *testing.T) {
	for name, text := range map[string]string{
		"syntax.proto": `syntax = "proto3"; message {`,
		"import.proto": `syntax = "proto3"; import "missing.proto";`,
	} {
		dir := write(t, map[string]string{name: text})
		if _, err := Load(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s loaded", name)
		}
	}
}
