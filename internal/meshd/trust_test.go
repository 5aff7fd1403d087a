package meshd_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/trust"
	"github.com/meshrpc/mesh/internal/zipkintest"
	"github.com/meshrpc/mesh/router"
)

// uid is this test process's Unix user, as meshd finds it for an app on
// the loopback.
var uid = strconv.Itoa(os.Getuid())

func dialAs(t testing.TB, addr, service string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), addr, client.Options{ServiceName: service, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func advertise(addr, service string) (*client.Server, error) {
	s := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
	s.Register(service, "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: append([]byte(service+":"), call.Body...)}, nil
	}))
	return s, s.Advertise(context.Background(), addr)
}

// An advertise needs proof: here the Unix user of the app's process, which
// the config grants some names. A name it was not granted is refused with
// the rule, counted, and registers nothing, so it gets no call; a user with
// no grant at all cannot advertise.
func TestAdvertiseNeedsProof(t *testing.T) {
	reg := discovery.NewLocal()
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Registry: reg, Logger: testkit.Quiet,
		AdvertiseRule: &meshd.AdvertiseRule{Grants: []meshd.Grant{{User: uid, Services: []string{"echo"}}, {User: "4242", Services: []string{"*"}}}}})
	real, err := advertise(d.Addr(), "echo")
	if err != nil {
		t.Fatalf("granted name refused: %v", err)
	}
	defer real.Shutdown(context.Background())
	imp, err := advertise(d.Addr(), "payments")
	if err == nil || !strings.Contains(err.Error(), `uid `+uid+` may not advertise "payments"`) {
		t.Fatalf("advertise of a name not granted: %v, want a refusal naming the uid and the name", err)
	}
	imp.Shutdown(context.Background())
	if insts, _ := reg.Instances(context.Background(), "payments"); len(insts) != 0 {
		t.Fatalf("refused advertise registered %v", insts)
	}
	c := dialMeshd(t, d.Addr())
	if _, err := callEcho(c, "payments", nil); err == nil {
		t.Fatal("a call reached the refused name")
	}
	if body, err := callEcho(c, "echo", []byte("x")); err != nil || string(body) != "echo:x" {
		t.Fatalf("granted service: %q %v", body, err)
	}
	if got := testkit.Metric(t, d.AdminAddr(), `mesh_proof_refused_total{call="advertise"}`); got != "1" {
		t.Fatalf("refusals counted: %s, want 1", got)
	}

	// No grant for this user, and no same-user rule: nothing is accepted.
	d2 := startWith(t, meshd.Config{Listen: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet,
		AdvertiseRule: &meshd.AdvertiseRule{Grants: []meshd.Grant{{User: "4242", Services: []string{"echo"}}}}})
	if s, err := advertise(d2.Addr(), "echo"); err == nil || !strings.Contains(err.Error(), "advertise refused") {
		t.Fatalf("advertise without a grant: %v", err)
	} else {
		s.Shutdown(context.Background())
	}
	// A grant for a user this host does not have stops meshd at start.
	if _, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet,
		AdvertiseRule: &meshd.AdvertiseRule{Grants: []meshd.Grant{{User: "no-such-user-here", Services: []string{"x"}}}}}); err == nil || !strings.Contains(err.Error(), `grant for user "no-such-user-here"`) {
		t.Fatalf("unknown user in a grant: %v", err)
	}
	// meshd's own names are never an app's.
	for _, name := range []string{"meshd", "hyperbahn"} {
		if s, err := advertise(d.Addr(), name); err == nil || !strings.Contains(err.Error(), "meshd's own service") {
			t.Fatalf("advertise of %q: %v", name, err)
		} else {
			s.Shutdown(context.Background())
		}
	}
}

func identifyFrames(t testing.TB, id uint32, service string) [][]byte {
	h := frame.AppendHeader(frame.AppendHeader(nil, frame.HeaderArgScheme, "json"), frame.HeaderCallerName, service)
	return testkit.CallFrames(t, id, "meshd", "identify", h, []byte("{}"), []byte(`{"service":"`+service+`"}`))
}

// answer reads frames until the one answering id; it returns its error
// message, "" for a call res.
func answer(t testing.TB, p *testkit.RawPeer, id uint32) string {
	t.Helper()
	for {
		f := p.Next(t, 5*time.Second)
		if f == nil {
			t.Fatalf("no answer to call %d", id)
		}
		if f.ID != id {
			continue
		}
		if f.Type == frame.TypeError {
			e, err := frame.DecodeError(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			return string(e.Message)
		}
		return ""
	}
}

// A caller that forges its caller name or meshd's role header gains
// nothing: the kill switch and the caller limit key on what it proved.
func TestForgedCallerGainsNothing(t *testing.T) {
	reg := discovery.NewLocal()
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Registry: reg, Logger: testkit.Quiet,
		AdvertiseRule: &meshd.AdvertiseRule{SameUser: true},
		Policies:      router.Policies{"echo": {Blocked: []string{"batch"}}, "limited": {CallerRateLimit: 5}}})
	for _, s := range []string{"echo", "limited"} {
		srv, err := advertise(d.Addr(), s)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown(context.Background())
	}
	call := func(id uint32, service, cn string) [][]byte {
		h := frame.AppendHeader(frame.AppendHeader(nil, frame.HeaderArgScheme, "raw"), frame.HeaderCallerName, cn)
		return testkit.CallFrames(t, id, service, "echo", h, nil, []byte("x"))
	}

	// Proven to be batch, calling as "web": still batch, still blocked.
	p := testkit.DialRaw(t, d.Addr(), nil)
	p.Send(t, identifyFrames(t, 1, "batch")...)
	if msg := answer(t, p, 1); msg != "" {
		t.Fatalf("identify refused: %s", msg)
	}
	p.Send(t, call(2, "echo", "web")...)
	if msg := answer(t, p, 2); !strings.Contains(msg, `calls from "batch" to "echo" are blocked`) {
		t.Fatalf("proven batch calling as web: %q, want the kill switch", msg)
	}
	// The SDK's calls as web, from a program proven to be web, pass.
	if body, err := callEcho(dialAs(t, d.Addr(), "web"), "echo", []byte("x")); err != nil || string(body) != "echo:x" {
		t.Fatalf("web: %q %v", body, err)
	}

	// 50 names from one anonymous caller, which claims to be a meshd, share
	// one caller limit: 5 calls/s, a burst of 1.
	p = testkit.DialRaw(t, d.Addr(), map[string]string{"mesh_role": "meshd"})
	passed := 0
	for i := range 50 {
		id := uint32(10 + i)
		p.Send(t, call(id, "limited", fmt.Sprint("caller-", i))...)
		if answer(t, p, id) == "" {
			passed++
		}
	}
	if passed > 3 {
		t.Fatalf("%d of 50 calls under 50 forged names passed a 5 calls/s caller limit", passed)
	}
	t.Logf("50 calls under 50 forged names, mesh_role: meshd: %d passed the 5/s caller limit", passed)
}

// Intentions from the config are asked for every call, on the caller's
// proven identity, and the destination's meshd decides: here the caller's
// meshd allows everything and the instance's denies web, so the denial
// also shows that the identity travelled between the two meshds. A new set
// is in force for the next call.
func TestIntentionsAreDecidedWhereTheInstanceIs(t *testing.T) {
	reg := discovery.NewLocal()
	allowAll, _ := intentions.Compile(nil, true, true)
	rules, err := intentions.Compile([]intentions.Rule{
		{Source: "web", Destination: "payments", Action: "deny"},
		{Source: "*", Destination: "payments", Action: "allow"},
	}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	atB := intentions.NewTable(rules)
	a := startWith(t, meshd.Config{Listen: "127.0.0.1:0", PeerListen: "127.0.0.1:0", Trust: meshdTrust(t), Admin: "127.0.0.1:0",
		Registry: reg, Logger: testkit.Quiet, Intentions: intentions.NewTable(allowAll)})
	b := startWith(t, meshd.Config{Listen: "127.0.0.2:0", PeerListen: "127.0.0.2:0", Trust: meshdTrust(t), Admin: "127.0.0.1:0",
		Registry: reg, Logger: testkit.Quiet, Intentions: atB})
	srv, err := advertise(b.Addr(), "payments")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())

	web := dialAs(t, a.Addr(), "web")
	if web.Identity() != "web" {
		t.Fatalf("identity %q, want web", web.Identity())
	}
	_, err = callEcho(web, "payments", []byte("x"))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != frame.ErrCodeBadRequest || !strings.Contains(ce.Message, `call from "web" to "payments" denied by intention web => payments (deny)`) {
		t.Fatalf("web => payments: %v, want a denial naming the intention", err)
	}
	// A call whose first frame is full carries its caller too (the frame is
	// split to make room): web is still web with a 200 KiB body.
	big := bytes.Repeat([]byte("$"), 200<<10)
	if _, err := callEcho(web, "payments", big); !errors.As(err, &ce) || !strings.Contains(ce.Message, "intention web => payments (deny)") {
		t.Fatalf("web => payments, 200 KiB: %v, want the same denial", err)
	}
	// * covers proven identities only: a caller that proved nothing is not let in by * => payments.
	if _, err := callEcho(dialMeshd(t, a.Addr()), "payments", []byte("y")); !errors.As(err, &ce) || !strings.Contains(ce.Message, "default deny for anonymous callers") {
		t.Fatalf("an anonymous caller under * => payments: %v, want the anonymous default's denial", err)
	}
	if body, err := callEcho(dialAs(t, a.Addr(), "orders"), "payments", []byte("y")); err != nil || string(body) != "payments:y" {
		t.Fatalf("a proven caller allowed by * => payments: %q %v", body, err)
	}
	if got := testkit.Metric(t, b.AdminAddr(), `mesh_stage_refusals_total{stage="authorize",service="payments"}`); got != "3" {
		t.Fatalf("denials counted at the destination: %q, want 3", got)
	}
	if res, err := http.Get("http://" + a.AdminAddr() + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if bytes.Contains(body, []byte(`stage="authorize"`)) {
			t.Fatal("the caller's meshd, which allows all, refused a call")
		}
	}
	// The caller's meshd sees the answer as the destination's: the call
	// went there (one relayed call on each side).
	if st := a.Status(context.Background()); st.Relayed < 2 {
		t.Fatalf("caller's meshd relayed %d calls", st.Relayed)
	}

	atB.Set(allowAll)
	if body, err := callEcho(web, "payments", []byte("z")); err != nil || string(body) != "payments:z" {
		t.Fatalf("after the intention is lifted: %q %v", body, err)
	}
	if body, err := callEcho(web, "payments", big); err != nil || !bytes.Equal(body, append([]byte("payments:"), big...)) {
		t.Fatalf("200 KiB after the intention is lifted: %d bytes, %v", len(body), err)
	}
}

// recorder keeps every byte a proxy forwards, both ways: a packet capture
// of the connection between two meshds.
type recorder struct {
	addr string
	mu   sync.Mutex
	seen bytes.Buffer
}

func record(t *testing.T, to string) *recorder {
	r := &recorder{}
	r.addr = proxy(t, "127.0.0.3", to, func(dst, src net.Conn, _ bool) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				r.mu.Lock()
				r.seen.Write(buf[:n])
				r.mu.Unlock()
				dst.Write(buf[:n])
			}
			if err != nil {
				dst.Close()
				return
			}
		}
	})
	return r
}

func (r *recorder) contains(b []byte) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Contains(r.seen.Bytes(), b), r.seen.Len()
}

// A capture of the connection between two meshds shows no body, method or
// service name with mTLS; the same capture of a plaintext host boundary
// (--tls off) shows them, so the check can tell.
func TestNoPlaintextBetweenHosts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tls     bool
		visible bool
	}{{"mtls", true, false}, {"plaintext", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			reg := discovery.NewLocal()
			var ta, tb *trust.Store
			if tc.tls {
				ta, tb = meshdTrust(t), meshdTrust(t)
			}
			bPeer := freeAddr(t, "127.0.0.2")
			rec := record(t, bPeer)
			a := startWith(t, meshd.Config{Listen: "127.0.0.1:0", PeerListen: "127.0.0.1:0", Trust: ta, Registry: reg, Logger: testkit.Quiet})
			b := startWith(t, meshd.Config{Listen: "127.0.0.2:0", PeerListen: bPeer, Advertise: rec.addr, Trust: tb, Registry: reg, Logger: testkit.Quiet})
			srv, err := advertise(b.Addr(), "vault")
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Shutdown(context.Background())
			secret := []byte("the-launch-codes-0451")
			if body, err := callEcho(dialMeshd(t, a.Addr()), "vault", secret); err != nil || !bytes.HasSuffix(body, secret) {
				t.Fatalf("call through the capture: %q %v", body, err)
			}
			for _, what := range [][]byte{secret, []byte("vault")} {
				seen, n := rec.contains(what)
				if n == 0 {
					t.Fatal("nothing captured")
				}
				if seen != tc.visible {
					t.Fatalf("%q in %d captured bytes: %v, want %v", what, n, seen, tc.visible)
				}
			}
		})
	}
}

func freeAddr(t testing.TB, ip string) string {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The host listener lets in only meshds of this mesh's CA. A stranger
// (plaintext TChannel, TLS with no certificate, a meshd certificate of
// another CA, an app's certificate of the same CA) cannot even finish the
// handshake, each refusal is counted, and a benign app's calls meanwhile
// see no failure.
func TestHostBoundaryRefusesStrangers(t *testing.T) {
	reg := discovery.NewLocal()
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", PeerListen: "127.0.0.1:0", Trust: meshdTrust(t), Admin: "127.0.0.1:0",
		Registry: reg, Logger: testkit.Quiet})
	srv, err := advertise(d.Addr(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	var benign, failed atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := dialMeshd(t, d.Addr())
		for {
			select {
			case <-stop:
				return
			default:
			}
			benign.Add(1)
			if _, err := callEcho(c, "echo", []byte("b")); err != nil {
				failed.Add(1)
			}
		}
	}()

	other := testkit.NewCA(t, "mesh.test")
	store := func(ca *testkit.CA, service string) *trust.Store {
		cert, key := ca.Issue(t, service)
		b, err := trust.NewBundle(cert, key, ca.PEM)
		if err != nil {
			t.Fatal(err)
		}
		return trust.NewStore(b)
	}
	tlsDial := func(cfg *tls.Config) error {
		nc, err := net.Dial("tcp", d.PeerAddr())
		if err != nil {
			return err
		}
		defer nc.Close()
		tc := tls.Client(nc, cfg)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			return err
		}
		// The server checks the client's certificate after the client's
		// handshake: the TChannel init exchange is what tells.
		_, err = conn.Client(tc, conn.Options{Logger: testkit.Quiet, HandshakeTimeout: 5 * time.Second})
		return err
	}
	attempts := []struct {
		name string
		try  func() error
	}{
		{"plaintext TChannel", func() error {
			_, err := conn.Dial(context.Background(), d.PeerAddr(), conn.Options{Logger: testkit.Quiet, HandshakeTimeout: 5 * time.Second})
			return err
		}},
		{"TLS without a certificate", func() error {
			return tlsDial(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		}},
		{"a meshd certificate of another CA", func() error { return tlsDial(store(other, trust.MeshdService).ClientConfig()) }},
		{"an app certificate of this CA", func() error { return tlsDial(store(testCA(), "web").ClientConfig()) }},
	}
	for _, a := range attempts {
		if err := a.try(); err == nil {
			t.Errorf("%s: let in", a.name)
		}
	}
	if err := tlsDial(meshdTrust(t).ClientConfig()); err != nil {
		t.Fatalf("a meshd of this CA refused: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "4 refusals counted", func() bool {
		return testkit.Metric(t, d.AdminAddr(), `mesh_connections_closed_total{reason="tls_refused"}`) == "4"
	})
	close(stop)
	<-done
	if failed.Load() != 0 || benign.Load() == 0 {
		t.Fatalf("benign calls: %d of %d failed", failed.Load(), benign.Load())
	}
	t.Logf("4 strangers refused at the host listener; %d benign calls, 0 failed", benign.Load())
}

// Identities rotate in place: under steady calls between two meshds, both
// move to a new CA (first trusting both, then only the new one) and no call
// fails; a meshd that joins after the rotation, with only the new CA's
// certificate, is let in, and one with the old CA's is not.
func TestRotationUnderLoadDropsNoCall(t *testing.T) {
	old := trust.FilesPoll
	trust.FilesPoll = 20 * time.Millisecond
	defer func() { trust.FilesPoll = old }()
	caOld, caNew := testCA(), testkit.NewCA(t, "mesh.test")
	reg := discovery.NewLocal()
	type host struct {
		dir   string
		store *trust.Store
		d     *meshd.Daemon
	}
	mk := func(ip string) *host {
		dir := t.TempDir()
		cert, key, ca := caOld.Files(t, dir, "meshd")
		s, err := trust.FromFiles(cert, key, ca, testkit.Quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return &host{dir: dir, store: s, d: startWith(t, meshd.Config{Listen: ip + ":0", PeerListen: ip + ":0", Trust: s, Registry: reg, Logger: testkit.Quiet})}
	}
	a, b := mk("127.0.0.1"), mk("127.0.0.2")
	srv, err := advertise(b.d.Addr(), "steady")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())

	var calls, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			c, err := client.Dial(context.Background(), a.d.Addr(), client.Options{Logger: testkit.Quiet})
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				calls.Add(1)
				if _, err := callEcho(c, "steady", []byte("s")); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	write := func(h *host, certPEM, keyPEM, caPEM []byte) {
		for name, b := range map[string][]byte{"meshd.pem": certPEM, "meshd-key.pem": keyPEM, "ca.pem": caPEM} {
			tmp := h.dir + "/" + name + ".tmp"
			if err := os.WriteFile(tmp, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, h.dir+"/"+name); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	both := append(append([]byte{}, caOld.PEM...), caNew.PEM...)
	for _, h := range []*host{a, b} { // step 1: trust both, present the new leaf
		cert, key := caNew.Issue(t, "meshd")
		write(h, cert, key, both)
	}
	for _, h := range []*host{a, b} {
		testkit.WaitFor(t, 5*time.Second, "rotation to the new leaf", func() bool { return h.store.Status().Rotations >= 1 })
	}
	time.Sleep(200 * time.Millisecond)
	for _, h := range []*host{a, b} { // step 2: the old CA is gone
		cert, key := caNew.Issue(t, "meshd")
		write(h, cert, key, caNew.PEM)
	}
	for _, h := range []*host{a, b} {
		testkit.WaitFor(t, 5*time.Second, "the old CA dropped", func() bool { return h.store.Status().Roots == 1 })
	}
	time.Sleep(200 * time.Millisecond)

	// A meshd that joins now, with the new CA only, calls b.
	dirC := t.TempDir()
	cert, key, ca := caNew.Files(t, dirC, "meshd")
	sc, err := trust.FromFiles(cert, key, ca, testkit.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	c := startWith(t, meshd.Config{Listen: "127.0.0.3:0", PeerListen: "127.0.0.3:0", Trust: sc, Registry: reg, Logger: testkit.Quiet})
	if body, err := callEcho(dialMeshd(t, c.Addr()), "steady", []byte("new")); err != nil || string(body) != "steady:new" {
		t.Fatalf("a meshd of the new CA, after the rotation: %q %v", body, err)
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || calls.Load() < 100 {
		t.Fatalf("%d of %d calls failed during the rotation (first: %v)", failed.Load(), calls.Load(), firstErr.Load())
	}
	// A meshd still on the old CA is refused by b now.
	nc, err := net.Dial("tcp", b.d.PeerAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	oldCert, oldKey := caOld.Issue(t, "meshd")
	ob, _ := trust.NewBundle(oldCert, oldKey, caOld.PEM)
	tc := tls.Client(nc, trust.NewStore(ob).ClientConfig())
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err == nil {
		if _, err := conn.Client(tc, conn.Options{Logger: testkit.Quiet}); err == nil {
			t.Fatal("a meshd of the dropped CA was let in")
		}
	}
	t.Logf("%d calls during two rotations, 0 failed", calls.Load())
}

// A denied call shows in its trace: the destination's meshd records a span
// saying which stage refused it and by which rule.
func TestDeniedCallShowsInItsTrace(t *testing.T) {
	sink := zipkintest.New(t)
	tr, err := tracing.New(tracing.Config{ZipkinURL: sink.URL, SampleRate: 1, ServiceName: "meshd"})
	if err != nil {
		t.Fatal(err)
	}
	deny, _ := intentions.Compile([]intentions.Rule{{Source: "web", Destination: "payments", Action: "deny"}}, true, true)
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet, Tracer: tr, Intentions: intentions.NewTable(deny)})
	srv, err := advertise(d.Addr(), "payments")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	var sent frame.Tracing
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	web := dialAs(t, d.Addr(), "web")
	if _, err := web.Call(ctx, "payments", "charge", nil, nil, client.WithTrace(), client.ReportTracing(&sent)); err == nil {
		t.Fatal("denied call passed")
	}
	// meshctl call --explain asks the same: the refusing stage and its rule.
	var recs []relay.Explanation
	if _, err := web.CallJSON(ctx, "meshd", "explain", nil, map[string]string{"span_id": fmt.Sprintf("%016x", sent.SpanID)}, &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Stage != "authorize" || !strings.Contains(recs[0].Refused, "intention web => payments (deny)") || recs[0].Caller != "web" {
		t.Fatalf("explanation of the denied call: %+v", recs)
	}
	tr.Shutdown(ctx)
	testkit.WaitFor(t, 5*time.Second, "the refusal's span", func() bool {
		for _, sp := range trace(sink, client.TraceID(sent)) {
			if sp.Tags["mesh.refused_by"] == "authorize" && strings.Contains(sp.Tags["mesh.result"], "intention web => payments (deny)") &&
				sp.Tags["mesh.caller"] == "web" && sp.Name == "charge" {
				return true
			}
		}
		return false
	})
}

// Apps may reach meshd on a Unix socket (SDK: unix:PATH), where the kernel
// tells meshd each process's user: the same rule as on the loopback.
func TestUnixSocketAppsProveTheirUser(t *testing.T) {
	sock := t.TempDir() + "/meshd.sock"
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", ListenUnix: sock, Registry: discovery.NewLocal(), Logger: testkit.Quiet,
		AdvertiseRule: &meshd.AdvertiseRule{Grants: []meshd.Grant{{User: uid, Services: []string{"echo"}}}}})
	srv, err := advertise("unix:"+sock, "echo")
	if err != nil {
		t.Fatalf("granted name over the Unix socket: %v", err)
	}
	defer srv.Shutdown(context.Background())
	if s, err := advertise("unix:"+sock, "payments"); err == nil || !strings.Contains(err.Error(), `uid `+uid+` may not advertise "payments"`) {
		t.Fatalf("a name not granted, over the Unix socket: %v", err)
	} else {
		s.Shutdown(context.Background())
	}
	c := dialAs(t, "unix:"+sock, "echo")
	if c.Identity() != "echo" {
		t.Fatalf("identity over the Unix socket: %q", c.Identity())
	}
	if body, err := callEcho(c, "echo", []byte("u")); err != nil || string(body) != "echo:u" {
		t.Fatalf("call over the Unix socket: %q %v", body, err)
	}
	// A second meshd does not take over a socket in use; a stale one is replaced.
	if _, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", ListenUnix: sock, Registry: discovery.NewLocal(), Logger: testkit.Quiet}); err == nil || !strings.Contains(err.Error(), "another meshd serves it") {
		t.Fatalf("second meshd on the same socket: %v", err)
	}
	d.Shutdown(context.Background())
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left after shutdown: %v", err)
	}
}

// A host listener on every address with no advertise address set takes the
// address of the default route, as the systemd config relies on; an
// unroutable advertise address given explicitly is refused.
func TestAdvertiseDefaultsToTheRouteAddress(t *testing.T) {
	d := startWith(t, meshd.Config{Listen: "127.0.0.1:0", PeerListen: "0.0.0.0:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet})
	host, port, _ := net.SplitHostPort(d.Status(context.Background()).Advertise)
	_, peerPort, _ := net.SplitHostPort(d.PeerAddr())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() || port != peerPort {
		t.Fatalf("advertise %s:%s for a host listener on %s", host, port, d.PeerAddr())
	}
	if _, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", Advertise: "0.0.0.0:21302", Registry: discovery.NewLocal(), Logger: testkit.Quiet}); err == nil || !strings.Contains(err.Error(), "set an advertise address") {
		t.Fatalf("explicit 0.0.0.0 advertise: %v", err)
	}
}
