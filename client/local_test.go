package client

import (
	"net"
	"os"
	"path/filepath"
	"testing"
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
