package testkit

import (
	"net"
	"sync"
	"testing"
)

// Tarpit listens on ip, accepts TCP connections and never answers on them
// (a host whose process hangs), until the test ends; it returns its address.
func Tarpit(t testing.TB, ip string) *net.TCPAddr {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return l.Addr().(*net.TCPAddr)
}
