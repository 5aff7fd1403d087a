package discovery

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLocalRegistry(t *testing.T) {
	ctx := context.Background()
	l := NewLocal()
	a := Instance{Service: "s", ID: "a", Addr: "127.0.0.1:1"}
	b := Instance{Service: "s", ID: "b", Addr: "127.0.0.2:1"}
	for _, inst := range []Instance{a, b, a} { // registering again replaces
		if err := l.Register(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	got, err := l.Instances(ctx, "s")
	if err != nil || len(got) != 2 {
		t.Fatalf("instances = %v, %v", got, err)
	}
	l.Deregister(ctx, a)
	l.Deregister(ctx, b)
	if _, err := l.Instances(ctx, "s"); !errors.Is(err, ErrNoInstances) {
		t.Fatalf("after deregister: %v", err)
	}
	for _, bad := range []Instance{{ID: "x", Addr: "a:1"}, {Service: "s", Addr: "a:1"}, {Service: "s", ID: "x"}} {
		if err := l.Register(ctx, bad); err == nil {
			t.Errorf("registered invalid %+v", bad)
		}
	}
}

func TestLocalStaticFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "peers.json")
	os.WriteFile(good, []byte(`{"instances":[{"service":"kv","id":"kv-1","addr":"10.0.0.2:21300"}]}`), 0o644)
	l := NewLocal()
	if err := l.LoadStatic(good); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Instances(context.Background(), "kv"); len(got) != 1 || got[0].Addr != "10.0.0.2:21300" {
		t.Fatalf("static instances = %v", got)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"instances":[{"service":"kv","id":"kv-1"}]}`), 0o644)
	if err := NewLocal().LoadStatic(bad); err == nil {
		t.Fatal("accepted an instance without an address")
	}
	if err := NewLocal().LoadStatic(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("accepted a missing file")
	}
}
