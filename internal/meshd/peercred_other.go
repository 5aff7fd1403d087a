//go:build !linux

package meshd

import (
	"errors"
	"net"
)

func unixPeerUID(*net.UnixConn) (int, error) {
	return 0, errors.New("peer credentials of Unix sockets are read on Linux only")
}
