package client

import "os"

// LocalSocket is where this host's meshd takes its apps when deployed as
// deploy/systemd sets it up (listen_unix).
const LocalSocket = "/run/meshd/apps.sock"

// LocalTCP is meshd's default app listener.
const LocalTCP = "127.0.0.1:21300"

// LocalAddr is the address of this host's meshd for Dial and Advertise:
// $MESH_VIA if set; else its Unix socket (unix:/run/meshd/apps.sock) if
// there is one; else LocalTCP. A hop over the Unix socket costs the apps
// and meshd less than one over loopback TCP (docs/PERFORMANCE.md).
func LocalAddr() string { return localAddr(os.Getenv("MESH_VIA"), LocalSocket) }

func localAddr(env, socket string) string {
	if env != "" {
		return env
	}
	if fi, err := os.Stat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		return "unix:" + socket
	}
	return LocalTCP
}
