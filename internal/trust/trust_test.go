package trust_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/trust"
)

func TestParseID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want trust.ID
		err  string
	}{
		{in: "spiffe://11111111-2222.consul/ns/default/dc/dc1/svc/web", want: trust.ID{TrustDomain: "11111111-2222.consul", Datacenter: "dc1", Service: "web"}},
		{in: "spiffe://td/ns/default/dc/eu-west/svc/meshd", want: trust.ID{TrustDomain: "td", Datacenter: "eu-west", Service: "meshd"}},
		{in: "https://td/ns/default/dc/dc1/svc/web", err: "not a spiffe://"},
		{in: "spiffe:///ns/default/dc/dc1/svc/web", err: "not a spiffe://"},
		{in: "spiffe://td/ns/default/dc/dc1/svc/", err: "want spiffe://"},
		{in: "spiffe://td/ns/default/dc/dc1/svc/web/extra", err: "want spiffe://"},
		{in: "spiffe://td/ns/default/svc/web", err: "want spiffe://"},
	} {
		got, err := trust.ParseID(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseID(%q) = %v, %v; want error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseID(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}

func bundle(t *testing.T, ca *testkit.CA, service string) *trust.Bundle {
	t.Helper()
	c, k := ca.Issue(t, service)
	b, err := trust.NewBundle(c, k, ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewBundleRefusesMisfits(t *testing.T) {
	ca, other := testkit.NewCA(t, "td.test"), testkit.NewCA(t, "td.test")
	c, k := ca.Issue(t, "meshd")
	_, k2 := ca.Issue(t, "meshd")
	for _, tc := range []struct {
		name         string
		cert, key, r []byte
		err          string
	}{
		{"key of another cert", c, k2, ca.PEM, "certificate and key"},
		{"cert of another CA", c, k, other.PEM, "own certificate"},
		{"no CA", c, k, nil, "holds no certificate"},
		{"garbage CA", c, k, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "CA bundle"},
	} {
		if _, err := trust.NewBundle(tc.cert, tc.key, tc.r); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
		}
	}
}

// handshake runs a TLS handshake between a server using srv and a client
// using cli over real sockets, and returns the errors of both ends.
func handshake(t *testing.T, srv *trust.Store, cli *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer nc.Close()
		tc := tls.Server(nc, srv.ServerConfig())
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil { // TLS 1.3: the client's certificate is checked after the client's handshake ends
			_, err = tc.Read(make([]byte, 1))
		}
		done <- err
	}()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	tc := tls.Client(nc, cli)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = tc.Write([]byte("x"))
		if clientErr == nil && tc.ConnectionState().Version != tls.VersionTLS13 {
			clientErr = errors.New("not TLS 1.3")
		}
	}
	return <-done, clientErr
}

func TestHostBoundaryAdmitsOnlyMeshdsOfItsCA(t *testing.T) {
	ca := testkit.NewCA(t, "td.test")
	srv := trust.NewStore(bundle(t, ca, "meshd"))
	for _, tc := range []struct {
		name   string
		client *tls.Config
		ok     bool
	}{
		{"meshd of the same CA", trust.NewStore(bundle(t, ca, "meshd")).ClientConfig(), true},
		{"app certificate of the same CA", trust.NewStore(bundle(t, ca, "web")).ClientConfig(), false},
		{"meshd of another CA, same trust domain name", trust.NewStore(bundle(t, testkit.NewCA(t, "td.test"), "meshd")).ClientConfig(), false},
		{"meshd of another trust domain", trust.NewStore(bundle(t, testkit.NewCA(t, "other.test"), "meshd")).ClientConfig(), false},
		{"no client certificate", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, false},
		{"TLS 1.2 only", &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			b := bundle(t, ca, "meshd")
			return &b.Cert, nil
		}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serr, cerr := handshake(t, srv, tc.client)
			if tc.ok && (serr != nil || cerr != nil) {
				t.Fatalf("refused: server %v, client %v", serr, cerr)
			}
			if !tc.ok && serr == nil {
				t.Fatalf("admitted (client saw %v)", cerr)
			}
		})
	}
}

func TestDialerRefusesServersThatAreNotMeshds(t *testing.T) {
	ca := testkit.NewCA(t, "td.test")
	cli := trust.NewStore(bundle(t, ca, "meshd")).ClientConfig()
	for _, tc := range []struct {
		name   string
		server *trust.Store
		ok     bool
	}{
		{"meshd", trust.NewStore(bundle(t, ca, "meshd")), true},
		{"an app's certificate", trust.NewStore(bundle(t, ca, "web")), false},
		{"another CA", trust.NewStore(bundle(t, testkit.NewCA(t, "td.test"), "meshd")), false},
	} {
		_, cerr := handshake(t, tc.server, cli)
		if (cerr == nil) != tc.ok {
			t.Errorf("%s: client error %v, want ok=%v", tc.name, cerr, tc.ok)
		}
	}
}

func TestFilesRotateWithoutRestart(t *testing.T) {
	old := trust.FilesPoll
	trust.FilesPoll = 20 * time.Millisecond
	defer func() { trust.FilesPoll = old }()
	dir := t.TempDir()
	ca := testkit.NewCA(t, "td.test")
	cert, key, caFile := ca.Files(t, dir, "meshd")
	s, err := trust.FromFiles(cert, key, caFile, testkit.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first := s.Current()

	// A half-written key keeps the old bundle and says why.
	if err := os.WriteFile(key, []byte("-----BEGIN"), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the bad key reported", func() bool { return s.Status().Error != "" })
	if s.Current() != first {
		t.Fatal("a bad file replaced the bundle")
	}

	// A new CA and leaf, written as a rotation tool would: the new bundle is in
	// force for the next handshake.
	ca2 := testkit.NewCA(t, "td.test")
	tmp := t.TempDir()
	c2, k2, r2 := ca2.Files(t, tmp, "meshd")
	for from, to := range map[string]string{c2: cert, k2: key, r2: caFile} {
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "rotation", func() bool { return s.Status().Rotations == 1 })
	if st := s.Status(); st.Error != "" || !st.Ready || st.ID != "spiffe://td.test/ns/default/dc/dc1/svc/meshd" {
		t.Fatalf("status after rotation: %+v", st)
	}
	peerNew := trust.NewStore(bundle(t, ca2, "meshd")).ClientConfig()
	if serr, cerr := handshake(t, s, peerNew); serr != nil || cerr != nil {
		t.Fatalf("a peer of the new CA refused: %v, %v", serr, cerr)
	}
	peerOld := trust.NewStore(bundle(t, ca, "meshd")).ClientConfig()
	if serr, _ := handshake(t, s, peerOld); serr == nil {
		t.Fatal("a peer of the replaced CA admitted")
	}
}

func TestFromFilesSaysWhatIsWrong(t *testing.T) {
	dir := t.TempDir()
	ca := testkit.NewCA(t, "td.test")
	cert, key, caFile := ca.Files(t, dir, "meshd")
	if _, err := trust.FromFiles(cert, key, filepath.Join(dir, "nosuch.pem"), testkit.Quiet); err == nil || !strings.Contains(err.Error(), "nosuch.pem") {
		t.Errorf("missing CA file: %v", err)
	}
	if _, err := trust.FromFiles(caFile, key, caFile, testkit.Quiet); err == nil {
		t.Error("the CA as the cert: no error")
	}
}

// Close returns at once while both blocking queries of FromConsul wait on
// an agent that never answers (as a real agent does for up to 5 minutes).
func TestFromConsulClosesMidQuery(t *testing.T) {
	asked := make(chan string, 2)
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked <- r.URL.Path
		<-r.Context().Done()
	}))
	defer agent.Close()
	client, err := api.NewClient(&api.Config{Address: agent.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	s := trust.FromConsul(client, testkit.Quiet)
	for range 2 {
		select {
		case <-asked:
		case <-time.After(5 * time.Second):
			t.Fatal("FromConsul did not ask the agent for its roots and leaf")
		}
	}
	start := time.Now()
	s.Close()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close took %v with two queries waiting", took)
	} else {
		t.Logf("Close took %v", took)
	}
}
