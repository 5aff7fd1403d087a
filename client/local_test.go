package client

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"
)

// The local meshd's address: the environment's, else its socket if one
// is there (a socket, not any file), else loopback TCP.
func TestLocalAddr(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "apps.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	file := filepath.Join(dir, "not-a-socket")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env, socket, want string
	}{
		{"", sock, "unix:" + sock},
		{"", file, LocalTCP},
		{"", filepath.Join(dir, "missing"), LocalTCP},
		{"10.0.0.1:21300", sock, "10.0.0.1:21300"},
		{"unix:/elsewhere", filepath.Join(dir, "missing"), "unix:/elsewhere"},
	} {
		if got := localAddr(tc.env, tc.socket); got != tc.want {
			t.Errorf("localAddr(%q, %q) = %q, want %q", tc.env, tc.socket, got, tc.want)
		}
	}
}

// LocalAddr looks where deploy/systemd's config has meshd listen: the two
// cannot drift apart unnoticed.
func TestLocalIsWhereTheDeployedMeshdListens(t *testing.T) {
	b, err := os.ReadFile("../deploy/systemd/meshd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Listen     string `yaml:"listen"`
		ListenUnix string `yaml:"listen_unix"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != LocalTCP || cfg.ListenUnix != LocalSocket {
		t.Fatalf("deploy/systemd/meshd.yaml listens at %q and %q; LocalAddr looks at %q and %q", cfg.Listen, cfg.ListenUnix, LocalTCP, LocalSocket)
	}
}
