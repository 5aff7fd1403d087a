package trust

import (
	"errors"
	"log/slog"
	"strings"
	"sync"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/internal/follow"
)

// FromConsul follows the local agent's connect CA: GET
// /v1/agent/connect/ca/roots and /v1/agent/connect/ca/leaf/meshd, each with
// blocking queries, so a new root or a renewed leaf (the agent renews it
// before it expires, and after a CA rotation) is in force within the time of
// one answer. These agent endpoints are Consul's documented integration
// point for native apps; they are served by the local agent's cache, so a
// fleet of meshds costs the servers one request per change, not per meshd.
//
// The client's token needs service:write on "meshd" for the leaf. It
// returns at once; Ready is closed when the first roots and leaf are in.
// Close ends both queries at once.
func FromConsul(client *api.Client, log *slog.Logger) *Store {
	s := newStore("consul", log)
	f := &follower{s: s}
	agent := client.Agent()
	s.done.Add(2)
	go func() {
		defer s.done.Done()
		follow.Run(s.ctx, f.config("roots"), agent.ConnectCARoots, f.roots)
	}()
	go func() {
		defer s.done.Done()
		leaf := func(q *api.QueryOptions) (*api.LeafCert, *api.QueryMeta, error) {
			return agent.ConnectCALeaf(MeshdService, q)
		}
		follow.Run(s.ctx, f.config("leaf"), leaf, f.leaf)
	}()
	return s
}

type follower struct {
	s *Store

	mu           sync.Mutex
	rootsPEM     []byte
	certPEM, key []byte
	lastCombined string
}

// config is the follow loop of what ("roots" or "leaf"): its failures show
// in Status and the log.
func (f *follower) config(what string) follow.Config {
	return follow.Config{Failed: func(err error) {
		f.s.setErr(err)
		f.s.log.Warn("consul connect CA: "+what+" not fetched", "err", err)
	}}
}

func (f *follower) roots(list *api.CARootList, _ *api.QueryMeta) {
	var pems []string
	for _, r := range list.Roots {
		pems = append(pems, r.RootCertPEM)
	}
	if len(pems) == 0 {
		f.s.setErr(errors.New("consul has no CA roots (is connect enabled on the servers?)"))
		return
	}
	f.mu.Lock()
	f.rootsPEM = []byte(strings.Join(pems, "\n"))
	f.mu.Unlock()
	f.combine()
}

func (f *follower) leaf(leaf *api.LeafCert, _ *api.QueryMeta) {
	f.mu.Lock()
	f.certPEM, f.key = []byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM)
	f.mu.Unlock()
	f.combine()
}

// combine makes a bundle once roots and leaf are both in, and again when
// either changed. A leaf the roots do not sign yet (a CA rotation seen in
// the leaf first) waits for the roots' answer.
func (f *follower) combine() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rootsPEM == nil || f.certPEM == nil {
		return
	}
	key := string(f.rootsPEM) + string(f.certPEM)
	if key == f.lastCombined {
		return
	}
	b, err := NewBundle(f.certPEM, f.key, f.rootsPEM)
	if err != nil {
		f.s.setErr(err)
		f.s.log.Debug("consul connect CA: leaf and roots do not match yet", "err", err)
		return
	}
	f.lastCombined = key
	f.s.Set(b)
}
