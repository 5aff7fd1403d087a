package meshd

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"
)

// In meshd's YAML, "* => echo allow" under "default_intention: deny" lets
// in every proven service and no process that proved nothing, even one
// that claims to be a meshd; "anonymous => echo allow" lets those in. With
// no intention at all the embedded registry's default still lets everyone
// in (make run and the quick start).
func TestStarCoversProvenCallersOnly(t *testing.T) {
	for _, tc := range []struct {
		name      string
		yaml      string
		anon, web int // calls of 20 answered
	}{
		{"star only", "default_intention: deny\nintentions:\n  - {source: \"*\", destination: echo, action: allow}\n", 0, 20},
		{"star and anonymous", "default_intention: deny\nintentions:\n  - {source: \"*\", destination: echo, action: allow}\n  - {source: anonymous, destination: echo, action: allow}\n", 20, 20},
		{"no intentions", "", 20, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := runFromYAML(t, tc.yaml)
			srv := client.NewServer(client.Options{ServiceName: "echo", Logger: testkit.Quiet})
			srv.Register("echo", "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
				return &client.Response{Body: call.Body}, nil
			}))
			if err := srv.Advertise(context.Background(), addr); err != nil {
				t.Fatal(err)
			}
			defer srv.Shutdown(context.Background())

			raw := testkit.DialRaw(t, addr, map[string]string{"mesh_role": "meshd"}) // proves nothing, claims much
			anon := 0
			for i := range 20 {
				id := uint32(10 + i)
				raw.Send(t, testkit.CallFrames(t, id, "echo", "echo", frame.AppendHeader(nil, frame.HeaderCallerName, "web"), nil, []byte("x"))...)
				if f := raw.Next(t, 5*time.Second); f != nil && f.Type == frame.TypeCallRes && f.ID == id {
					anon++
				}
			}
			web, err := client.Dial(context.Background(), addr, client.Options{ServiceName: "web", Logger: testkit.Quiet}) // proven by its Unix user
			if err != nil {
				t.Fatal(err)
			}
			defer web.Close()
			if web.Identity() != "web" {
				t.Fatalf("web proved %q", web.Identity())
			}
			proven := 0
			for range 20 {
				if res, err := web.Call(context.Background(), "echo", "echo", nil, []byte("y")); err == nil && bytes.Equal(res.Body, []byte("y")) {
					proven++
				}
			}
			if anon != tc.anon || proven != tc.web {
				t.Fatalf("answered: anonymous %d of 20 (want %d), proven web %d of 20 (want %d)", anon, tc.anon, proven, tc.web)
			}
		})
	}
}

// runFromYAML runs meshd as cmd/meshd does, from a YAML config file on free
// loopback ports with the embedded registry, until the test ends; it
// returns the app listener's address. args come after the defaults.
func runFromYAML(t *testing.T, yaml string, args ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	path := filepath.Join(t.TempDir(), "meshd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	args = append([]string{"--config", path, "--listen", addr, "--admin", "off", "--consul", "off"}, args...)
	o, err := ParseOptions(args, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o, testkit.Quiet) }()
	t.Cleanup(func() { stop(); <-done })
	testkit.WaitFor(t, 5*time.Second, "meshd listening on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}
