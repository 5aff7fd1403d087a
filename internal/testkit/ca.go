package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA issues SPIFFE certificates the way Consul's CA does (EC P-256, a URI
// SAN spiffe://<td>/ns/default/dc/dc1/svc/<service>), for tests of the host
// boundary that do not run an agent.
type CA struct {
	TrustDomain string
	PEM         []byte // the CA certificate
	cert        *x509.Certificate
	key         *ecdsa.PrivateKey
}

// NewCA makes a CA for trustDomain.
func NewCA(t testing.TB, trustDomain string) *CA {
	t.Helper()
	ca, err := MakeCA(trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// MakeCA is NewCA for a CA shared by a package's tests (made once, outside
// any one test).
func MakeCA(trustDomain string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "test CA " + trustDomain},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{TrustDomain: trustDomain, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert: cert, key: key}, nil
}

// Issue returns a leaf certificate and key (PEM) for service.
func (ca *CA) Issue(t testing.TB, service string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := &url.URL{Scheme: "spiffe", Host: ca.TrustDomain, Path: "/ns/default/dc/dc1/svc/" + service}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: service},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// Files writes a leaf for service, its key and the CA into dir as
// service.pem, service-key.pem and ca.pem, and returns their paths.
func (ca *CA) Files(t testing.TB, dir, service string) (cert, key, caFile string) {
	t.Helper()
	c, k := ca.Issue(t, service)
	cert, key, caFile = filepath.Join(dir, service+".pem"), filepath.Join(dir, service+"-key.pem"), filepath.Join(dir, "ca.pem")
	for path, b := range map[string][]byte{cert: c, key: k, caFile: ca.PEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, caFile
}
