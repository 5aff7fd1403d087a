package trust

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// MeshdService is the service name in every meshd's identity: only a
// certificate for it may connect to another meshd's host listener.
const MeshdService = "meshd"

// ID is a workload's SPIFFE identity in the shape Consul's CA issues.
type ID struct {
	TrustDomain string
	Datacenter  string
	Service     string
}

// String is the ID as a URI.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/default/dc/" + id.Datacenter + "/svc/" + id.Service
}

// ParseID reads spiffe://<td>/ns/<ns>/dc/<dc>/svc/<service>.
func ParseID(uri string) (ID, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return ID{}, fmt.Errorf("identity %q: %w", uri, err)
	}
	if u.Scheme != "spiffe" || u.Host == "" {
		return ID{}, fmt.Errorf("identity %q: not a spiffe:// URI with a trust domain", uri)
	}
	p := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(p) != 6 || p[0] != "ns" || p[2] != "dc" || p[4] != "svc" || p[1] == "" || p[3] == "" || p[5] == "" {
		return ID{}, fmt.Errorf("identity %q: want spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>", uri)
	}
	return ID{TrustDomain: u.Host, Datacenter: p[3], Service: p[5]}, nil
}

// CertID is the identity in a certificate's URI SAN.
func CertID(c *x509.Certificate) (ID, error) {
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			return ParseID(u.String())
		}
	}
	return ID{}, errors.New("certificate has no spiffe:// URI SAN")
}
