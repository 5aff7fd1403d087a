//go:build integration

package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// hostileBound is what meshd may hold in memory while any one hostile peer
// does its worst.
const hostileBound = 256 << 20

// TestHostilePeers runs each attack of issue 13 against a real meshd process
// with the example echo service behind it, while benign SDK callers call echo
// through the same meshd. Each scenario must leave the benign callers with no
// failure, meshd's resident memory under 256 MiB, and its file descriptors
// back to where they were.
func TestHostilePeers(t *testing.T) {
	h := startHost(t, "127.0.0.1", "off", "--handshake-timeout", "1s", "--idle-timeout", "1s", "--log-level", "info")
	start(t, "echo", "--via", h.addr)
	sdk := benignClient(t, h)
	hdr := frame.AppendHeader(nil, "as", "raw")
	underAttack(t, h, func() func() (int64, int64, error) { return benignLoad(sdk) }, []attack{
		{"bad checksums and truncated calls", func(t *testing.T) string {
			p := testkit.DialRaw(t, h.addr, nil)
			for i := range 500 {
				f := testkit.CallFrames(t, uint32(2*i+1), "echo", "echo", hdr, nil, []byte("body"))[0]
				f[len(f)-1] ^= 0xFF
				p.Send(t, f)
				p.Send(t, argOneOnly(uint32(2*i+2)))
			}
			return fmt.Sprintf("1,000 malformed calls; %d answered bad request", countErrors(t, p, 1000, frame.ErrCodeBadRequest))
		}},
		{"1,100 half-sent calls", func(t *testing.T) string {
			p := testkit.DialRaw(t, h.addr, nil)
			first := testkit.CallFrames(t, 1, "echo", "echo", hdr, nil, make([]byte, 100<<10))[0]
			for id := uint32(1); id <= 1100; id++ {
				f := bytes.Clone(first)
				frame.SetID(f, id)
				p.Send(t, f)
			}
			return fmt.Sprintf("%d of 1,100 answered busy", countErrors(t, p, 1100-64, frame.ErrCodeBusy))
		}},
		{"an arg1 that never ends", func(t *testing.T) string {
			p := testkit.DialRaw(t, h.addr, nil)
			p.Send(t, argOneStart(1, 15<<10)) // 15 KiB of arg1, to be continued, and continued
			sent := 15 << 10
			for sent < 64<<20 {
				if _, err := p.Write(continueArg1(1, 60<<10)); err != nil {
					break
				}
				sent += 60 << 10
			}
			return fmt.Sprintf("%d MiB of arg1 sent; %d answered bad request", sent>>20, countErrors(t, p, 1, frame.ErrCodeBadRequest))
		}},
		{"512 unfinished calls with 1 MiB arg2", func(t *testing.T) string {
			p := testkit.DialRaw(t, h.addr, nil)
			for id := uint32(1); id <= 512; id++ {
				frames := testkit.CallFrames(t, id, "echo", "echo", hdr, make([]byte, 1<<20), []byte("x"))
				p.Send(t, frames[:len(frames)-1]...) // all but the last frame
			}
			return fmt.Sprintf("%d answered busy", countErrors(t, p, 512-64, frame.ErrCodeBusy))
		}},
		{"a caller that never reads", func(t *testing.T) string {
			p := testkit.DialRaw(t, h.addr, nil)
			p.Conn.(*net.TCPConn).SetReadBuffer(4 << 10)
			body := make([]byte, 1<<10)
			n := 0
			for ; n < 50000; n++ {
				p.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := p.Write(testkit.CallFrames(t, uint32(n+1), "echo", "echo", hdr, nil, body)[0]); err != nil {
					break // closed by meshd
				}
			}
			refused := testkit.Metric(t, h.admin, `mesh_limit_hits_total{limit="backlogged_caller"}`)
			if refused == "0" {
				t.Errorf("no call of a caller that reads nothing was refused")
			}
			return fmt.Sprintf("%d calls sent, %s refused busy once its answers backed up", n, refused)
		}},
		{"5,000 connections that never handshake", func(t *testing.T) string {
			var conns []net.Conn
			for range 5000 {
				nc, err := net.Dial("tcp", h.addr)
				if err != nil {
					break
				}
				conns = append(conns, nc)
			}
			start := time.Now()
			var wg sync.WaitGroup
			var closed atomic.Int64
			for _, nc := range conns {
				wg.Go(func() {
					nc.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := nc.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
						closed.Add(1)
					}
					nc.Close()
				})
			}
			wg.Wait()
			return fmt.Sprintf("%d connections, %d closed by meshd within %v", len(conns), closed.Load(), time.Since(start).Round(100*time.Millisecond))
		}},
		{"frames that stop halfway", func(t *testing.T) string {
			var peers []*testkit.RawPeer
			for i := range 200 {
				p := testkit.DialRaw(t, h.addr, nil)
				if i%2 == 0 {
					p.Write([]byte{0, 64, 3, 0, 0, 0, 0, 1}) // 8 of a header's 16 bytes
				} else {
					p.Write(append([]byte{0xFF, 0xFF, 3, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 100)...)) // 65,535 promised, 116 sent
				}
				peers = append(peers, p)
			}
			start := time.Now()
			closed := 0
			for _, p := range peers {
				for p.Next(t, 5*time.Second) != nil { // pings, unanswered, until meshd gives up
				}
				closed++
			}
			return fmt.Sprintf("%d connections with a frame cut short, all closed within %v (idle timeout 1s)", closed, time.Since(start).Round(100*time.Millisecond))
		}},
		{"20,000 made-up service names", func(t *testing.T) string {
			p := testkit.DialRaw(t, h.addr, nil)
			go func() {
				for i := range 20000 {
					p.Write(testkit.CallFrames(t, uint32(i+1), fmt.Sprintf("nosuch-%d", i), "m", hdr, nil, nil)[0])
				}
			}()
			return fmt.Sprintf("%d declined", countErrors(t, p, 20000, frame.ErrCodeDeclined))
		}},
		{"garbage on 2,000 connections", func(t *testing.T) string {
			before := logLines(t, h)
			for i := range 2000 {
				p := testkit.DialRaw(t, h.addr, nil)
				p.Write(append([]byte{0, 5}, []byte("garbage-"+strconv.Itoa(i+100000))...)) // a frame size under the header's
				p.Next(t, time.Second)                                                      // the protocol error meshd answers with
				p.Close()
			}
			time.Sleep(200 * time.Millisecond)
			return fmt.Sprintf("%d log lines written for them", logLines(t, h)-before)
		}},
	})
}

// attack is one hostile scenario; it returns what it did, in words.
type attack struct {
	name string
	do   func(t *testing.T) string
}

// underAttack runs each attack as a subtest while benign load goes on:
// the benign calls must all succeed, meshd's RSS stay under hostileBound and
// its file descriptors come back to where they were.
func underAttack(t *testing.T, h *host, benign func() func() (calls, failed int64, first error), attacks []attack) {
	pid := h.meshd.cmd.Process.Pid
	for _, sc := range attacks {
		t.Run(sc.name, func(t *testing.T) {
			fds0 := fdCount(t, pid)
			stop := benign()
			peak := watchRSS(pid)
			did := sc.do(t)
			time.Sleep(300 * time.Millisecond) // benign calls go on after the attack too
			calls, failed, first := stop()
			maxRSS := peak()
			var fds int
			ok := testkit.WaitFor(t, 15*time.Second, "fds back to baseline", func() bool { fds = fdCount(t, pid); return fds <= fds0+4 })
			t.Logf("%s: %s; benign calls %d, failed %d (first: %v); meshd peak RSS %d MiB; fds %d → %d (after %v)",
				sc.name, did, calls, failed, first, maxRSS>>20, fds0, fds, ok.Round(10*time.Millisecond))
			testkit.Unharmed(t, calls, failed, first)
			if maxRSS > hostileBound {
				t.Errorf("meshd peaked at %d MiB, over %d", maxRSS>>20, hostileBound>>20)
			}
		})
	}
}

// benignLoad calls echo through sdk from 4 goroutines until stopped.
func benignLoad(sdk *client.Client) func() (calls, failed int64, first error) {
	return testkit.Load(4, func(ctx context.Context) error {
		res, err := sdk.Call(ctx, "echo", "echo", nil, []byte("benign"))
		if err == nil && string(res.Body) != "benign" {
			err = fmt.Errorf("echo answered %q", res.Body)
		}
		time.Sleep(time.Millisecond)
		return err
	})
}

// benignClient dials h as an SDK app and waits until echo answers through it.
func benignClient(t *testing.T, h *host) *client.Client {
	t.Helper()
	sdk, err := client.Dial(context.Background(), h.addr, client.Options{ServiceName: "benign", Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdk.Close() })
	testkit.WaitFor(t, 10*time.Second, "echo routable", func() bool {
		_, err := sdk.Call(context.Background(), "echo", "echo", nil, []byte("x"))
		return err == nil
	})
	return sdk
}

// watchRSS samples pid's resident memory every 20ms until the returned
// function is called, which returns the peak.
func watchRSS(pid int) func() int64 {
	var peak atomic.Int64
	done := make(chan struct{})
	go func() {
		for {
			if v := rss(pid); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() int64 { close(done); return max(peak.Load(), rss(pid)) }
}

func rss(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func fdCount(t *testing.T, pid int) int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func logLines(t *testing.T, h *host) int {
	b, _ := os.ReadFile(h.meshd.log)
	return bytes.Count(b, []byte("\n"))
}

// countErrors reads frames until want error frames with code came (or 10s
// pass) and returns how many did.
func countErrors(t *testing.T, p *testkit.RawPeer, want int, code frame.ErrCode) int {
	got := 0
	for got < want {
		f := p.Next(t, 10*time.Second)
		if f == nil {
			break
		}
		if m, err := frame.DecodeError(f.Payload); f.Type == frame.TypeError && err == nil && m.Code == code {
			got++
		}
	}
	return got
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// argOneOnly is a call req whose only frame ends after arg1.
func argOneOnly(id uint32) []byte {
	p := []byte{0, 0, 0, 0x13, 0x88}
	p = append(p, make([]byte, frame.TracingSize)...)
	p = append(p, 4, 'e', 'c', 'h', 'o', 1, 2, 'a', 's', 3, 'r', 'a', 'w', byte(frame.ChecksumNone), 0, 4, 'e', 'c', 'h', 'o')
	return rawFrame(frame.TypeCallReq, id, p)
}

// argOneStart is the first frame of a call whose arg1 (n bytes so far) goes
// on in the next frame.
func argOneStart(id uint32, n int) []byte {
	p := []byte{frame.FlagMoreFragments, 0, 0, 0x13, 0x88}
	p = append(p, make([]byte, frame.TracingSize)...)
	p = append(p, 4, 'e', 'c', 'h', 'o', 1, 2, 'a', 's', 3, 'r', 'a', 'w', byte(frame.ChecksumNone), byte(n>>8), byte(n))
	p = append(p, bytes.Repeat([]byte("m"), n)...)
	return rawFrame(frame.TypeCallReq, id, p)
}

// continueArg1 is a call req continue frame carrying n more bytes of arg1,
// with more to come (checksum none, so only the length limit stops it).
func continueArg1(id uint32, n int) []byte {
	p := []byte{frame.FlagMoreFragments, byte(frame.ChecksumNone), byte(n >> 8), byte(n)}
	p = append(p, bytes.Repeat([]byte("m"), n)...)
	return rawFrame(frame.TypeCallReqContinue, id, p)
}

func rawFrame(typ frame.Type, id uint32, payload []byte) []byte {
	h := make([]byte, frame.HeaderSize, frame.HeaderSize+len(payload))
	size := frame.HeaderSize + len(payload)
	h[0], h[1], h[2] = byte(size>>8), byte(size), byte(typ)
	h[4], h[5], h[6], h[7] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
	return append(h, payload...)
}

// At its open-file limit meshd refuses new connections cleanly and keeps
// answering /health and its callers' calls: it holds TChannel connections to
// the limit less a reserve, which the admin listener and its peers use.
func TestFileDescriptorExhaustion(t *testing.T) {
	ports := testconsul.FreePorts(t, "127.0.0.1", 2)
	h := &host{ip: "127.0.0.1", addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), admin: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))}
	// A shell sets the limit: 300 open files, so 44 TChannel connections.
	h.meshd = start(t, "/bin/sh", "-c", "ulimit -n 300 && exec "+filepath.Join(binDir, "meshd")+" --listen "+h.addr+" --admin "+h.admin+" --consul off --handshake-timeout 3s")
	testkit.WaitFor(t, 10*time.Second, "meshd healthy", func() bool {
		resp, err := http.Get("http://" + h.admin + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	start(t, "echo", "--via", h.addr)
	sdk := benignClient(t, h)
	stop := benignLoad(sdk)
	var conns []net.Conn
	for range 1000 {
		nc, err := net.Dial("tcp", h.addr)
		if err != nil {
			break
		}
		conns = append(conns, nc)
	}
	healthy := 0
	for range 20 {
		resp, err := http.Get("http://" + h.admin + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				healthy++
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	refused := testkit.Metric(t, h.admin, "mesh_connections_refused_total")
	for _, nc := range conns {
		nc.Close()
	}
	calls, failed, first := stop()
	t.Logf("1,000 connections to a meshd limited to 300 open files: %s refused at once; /health answered %d of 20 times meanwhile; benign calls %d, failed %d (first: %v)",
		refused, healthy, calls, failed, first)
	testkit.Unharmed(t, calls, failed, first)
	if healthy != 20 || refused == "0" {
		t.Fatalf("health %d of 20, %s connections refused", healthy, refused)
	}
}
