package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Bundle is one generation of what a meshd presents and trusts.
type Bundle struct {
	Cert  tls.Certificate // this meshd's chain and key; Cert.Leaf is parsed
	ID    ID              // the identity in Cert.Leaf
	Roots *x509.CertPool  // CAs a peer's chain must end in
	roots int
}

// NewBundle parses PEM: a certificate chain, its private key and one or more
// CA certificates. The certificate must carry a SPIFFE identity and chain to
// one of the CAs, so a misconfiguration fails here, not in every handshake.
func NewBundle(certPEM, keyPEM, caPEM []byte) (*Bundle, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate and key: %w", err)
	}
	id, err := CertID(cert.Leaf)
	if err != nil {
		return nil, err
	}
	b := &Bundle{Cert: cert, ID: id, Roots: x509.NewCertPool()}
	for rest := caPEM; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		ca, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		b.Roots.AddCert(ca)
		b.roots++
	}
	if b.roots == 0 {
		return nil, errors.New("CA bundle holds no certificate")
	}
	if _, err := b.verify(cert.Certificate); err != nil {
		return nil, fmt.Errorf("own certificate: %w", err)
	}
	return b, nil
}

// verify checks a chain against the roots and returns the leaf's identity.
func (b *Bundle) verify(raw [][]byte) (ID, error) {
	if len(raw) == 0 {
		return ID{}, errors.New("no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return ID{}, err
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	// SPIFFE identities are URIs, not host names: the chain is checked
	// here and the name below, as SPIFFE's X.509 rules say.
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: b.Roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return ID{}, err
	}
	return CertID(certs[0])
}

// Store holds the current Bundle; its TLS configurations read it at every
// handshake, so a rotation applies to the next connection without a restart.
type Store struct {
	source    string
	log       *slog.Logger
	cur       atomic.Pointer[Bundle]
	rotations atomic.Int64
	ready     chan struct{}
	readyOnce sync.Once
	ctx       context.Context // of the source's goroutines, ended by Close
	stop      context.CancelFunc
	done      sync.WaitGroup

	mu      sync.Mutex
	lastErr string
}

func newStore(source string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Store{source: source, log: log, ready: make(chan struct{}), ctx: ctx, stop: stop}
}

// NewStore returns a Store that holds b and never changes (for tests and
// callers that manage rotation themselves through Set).
func NewStore(b *Bundle) *Store {
	s := newStore("static", slog.New(slog.DiscardHandler))
	s.Set(b)
	return s
}

// Set makes b the bundle of every later handshake.
func (s *Store) Set(b *Bundle) {
	s.setErr(nil) // before the rotation counts: a Status that shows it shows no stale error
	if s.cur.Swap(b) != nil {
		s.rotations.Add(1)
		s.log.Info("identity rotated", "id", b.ID.String(), "not_after", b.Cert.Leaf.NotAfter)
	} else {
		s.log.Info("identity loaded", "id", b.ID.String(), "not_after", b.Cert.Leaf.NotAfter, "source", s.source)
	}
	s.readyOnce.Do(func() { close(s.ready) })
}

func (s *Store) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = ""
	if err != nil {
		s.lastErr = err.Error()
	}
}

// Ready is closed once the Store holds a bundle.
func (s *Store) Ready() <-chan struct{} { return s.ready }

// Current is the bundle in use, nil before the first.
func (s *Store) Current() *Bundle { return s.cur.Load() }

// Close stops the source feeding the Store and waits for it: at once, even
// in the middle of a blocking query.
func (s *Store) Close() {
	s.stop()
	s.done.Wait()
}

// Status is what /status shows of the Store.
type Status struct {
	Source    string    `json:"source"`
	Ready     bool      `json:"ready"`
	ID        string    `json:"id,omitempty"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	Roots     int       `json:"roots"`
	Rotations int64     `json:"rotations"`
	Error     string    `json:"error,omitempty"`
}

// Status describes the Store.
func (s *Store) Status() Status {
	st := Status{Source: s.source, Rotations: s.rotations.Load()}
	if b := s.cur.Load(); b != nil {
		st.Ready, st.ID, st.NotAfter, st.Roots = true, b.ID.String(), b.Cert.Leaf.NotAfter, b.roots
	}
	s.mu.Lock()
	st.Error = s.lastErr
	s.mu.Unlock()
	return st
}

// ErrNotReady is the handshake error while the Store has no bundle yet.
var ErrNotReady = errors.New("no certificate yet (waiting for its source)")

// VerifyPeer checks a peer's chain against the current roots and that it
// is another meshd of this trust domain; it returns the peer's identity.
func (s *Store) VerifyPeer(raw [][]byte) (ID, error) {
	b := s.cur.Load()
	if b == nil {
		return ID{}, ErrNotReady
	}
	id, err := b.verify(raw)
	switch {
	case err != nil:
		return ID{}, fmt.Errorf("peer certificate: %w", err)
	case id.TrustDomain != b.ID.TrustDomain:
		return ID{}, fmt.Errorf("peer %s is of trust domain %q, not %q", id, id.TrustDomain, b.ID.TrustDomain)
	case id.Service != MeshdService:
		return ID{}, fmt.Errorf("peer %s is not a meshd (want service %q)", id, MeshdService)
	}
	return id, nil
}

func (s *Store) cert() (*tls.Certificate, error) {
	b := s.cur.Load()
	if b == nil {
		return nil, ErrNotReady
	}
	return &b.Cert, nil
}

func (s *Store) verifyConn(raw [][]byte, _ [][]*x509.Certificate) error {
	_, err := s.VerifyPeer(raw)
	return err
}

// ServerConfig is the host listener's TLS: 1.3 only, and a client must show
// a meshd certificate of this trust domain.
func (s *Store) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		ClientAuth:            tls.RequireAnyClientCert, // checked by VerifyPeer
		GetCertificate:        func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert() },
		VerifyPeerCertificate: s.verifyConn,
	}
}

// ClientConfig is the TLS of connections to other meshds. The server's name
// is its SPIFFE identity, checked by VerifyPeer, so the host-name check of
// crypto/tls is off.
func (s *Store) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		InsecureSkipVerify:    true, // replaced by VerifyPeerCertificate: chain and SPIFFE ID
		GetClientCertificate:  func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return s.cert() },
		VerifyPeerCertificate: s.verifyConn,
	}
}
