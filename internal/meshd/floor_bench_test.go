package meshd_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/testkit"
)

// BenchmarkHopFloor is what BenchmarkHop's paths cost at the least in this
// process: a 1 KiB message echoed over one socket, and the same through a
// relay that only copies bytes (a goroutine per direction reading and
// writing as the bytes come: no protocol, no hand-off). What the relay adds
// is the floor under any hop between sockets here: two more trips of each
// message through the kernel and the scheduler. The ends are plain Go
// sockets (echo), the SDK calling an SDK server (sdk, BenchmarkHop's
// mesh-direct) and tchannel-go calling tchannel-go (tchannel-direct): what
// the same relay adds between each stack's own ends, against which meshd's
// hop and tchannel-go's relay compare like for like.
func BenchmarkHopFloor(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	for _, network := range []string{"tcp", "unix"} {
		for _, ends := range []string{"echo", "sdk", "tchannel"} {
			if ends == "tchannel" && network != "tcp" {
				continue // tchannel-go dials host:port
			}
			for _, relayed := range []bool{false, true} {
				name := network + "-" + ends
				if relayed {
					name += "-relay"
				}
				b.Run(name+"/c=1", func(b *testing.B) {
					var addr string
					switch ends {
					case "echo":
						addr = listenFloor(b, network, func(nc net.Conn) { pump(nc, nc) })
					case "sdk":
						addr = sdkServer(b, network)
					default:
						addr = tchannelServer(b)
					}
					if relayed {
						server := addr
						addr = listenFloor(b, network, func(nc net.Conn) {
							up, err := net.Dial(network, server)
							if err != nil {
								nc.Close()
								return
							}
							go pump(up, nc)
							pump(nc, up)
						})
					}
					switch {
					case ends == "echo":
						testkit.Bench(b, 1, body, socketCaller(b, network, addr))
					case ends == "tchannel":
						testkit.Bench(b, 1, body, tchannelCaller(b, addr))
					case network == "unix":
						testkit.Bench(b, 1, body, sdkCaller(b, "unix:"+addr))
					default:
						testkit.Bench(b, 1, body, sdkCaller(b, addr))
					}
				})
			}
		}
	}
}

// benchServer is an SDK server of the bench echo, shut down when b ends.
func benchServer(b *testing.B) *client.Server {
	srv := client.NewServer(client.Options{Logger: testkit.Quiet})
	srv.Register("bench", "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: call.Body}, nil
	}))
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}

// sdkServer serves the bench echo with the SDK on a new listener; its
// address.
func sdkServer(b *testing.B, network string) string {
	l := listenLocal(b, network)
	go benchServer(b).Serve(l)
	return l.Addr().String()
}

// sdkCaller calls the bench echo at target with the SDK.
func sdkCaller(b *testing.B, target string) testkit.BenchCall {
	c, err := client.Dial(context.Background(), target, client.Options{ServiceName: "bench-client", Logger: testkit.Quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return func(ctx context.Context, body []byte) ([]byte, error) {
		res, err := c.Call(ctx, "bench", "echo", nil, body)
		if err != nil {
			return nil, err
		}
		return res.Body, nil
	}
}

// listenLocal is a new listener on loopback TCP or on a socket in a
// temporary directory, closed when b ends.
func listenLocal(b *testing.B, network string) net.Listener {
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(b.TempDir(), "bench.sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

// listenFloor serves each connection of a new listener with serve, which
// owns it (it ends when its peer closes).
func listenFloor(b *testing.B, network string, serve func(net.Conn)) string {
	l := listenLocal(b, network)
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go serve(nc)
		}
	}()
	return l.Addr().String()
}

// pump writes what it reads from src to dst as it comes, until either
// ends; then it closes dst. A read and a write per chunk, on one goroutine
// (io.Copy would splice between two TCP sockets).
func pump(dst io.WriteCloser, src io.Reader) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// socketCaller sends a message and reads as many bytes back, on a
// connection of its own (one per caller at a time, kept for the next).
func socketCaller(b *testing.B, network, addr string) testkit.BenchCall {
	idle := make(chan net.Conn, 1024)
	b.Cleanup(func() {
		for {
			select {
			case nc := <-idle:
				nc.Close()
			default:
				return
			}
		}
	})
	return func(ctx context.Context, body []byte) ([]byte, error) {
		var nc net.Conn
		select {
		case nc = <-idle:
		default:
			var err error
			if nc, err = net.Dial(network, addr); err != nil {
				return nil, err
			}
		}
		res := make([]byte, len(body))
		if _, err := nc.Write(body); err != nil {
			nc.Close()
			return nil, err
		}
		if _, err := io.ReadFull(nc, res); err != nil {
			nc.Close()
			return nil, err
		}
		select {
		case idle <- nc:
		default:
			nc.Close()
		}
		return res, nil
	}
}
