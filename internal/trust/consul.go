package trust

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
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
func FromConsul(client *api.Client, log *slog.Logger) *Store {
	s := newStore("consul", log)
	f := &follower{s: s, agent: client.Agent()}
	s.done.Add(2)
	go f.follow("roots", f.roots)
	go f.follow("leaf", f.leaf)
	return s
}

type follower struct {
	s     *Store
	agent *api.Agent

	mu           sync.Mutex
	rootsPEM     []byte
	certPEM, key []byte
	lastCombined string
}

// follow runs one blocking-query loop until the Store closes: on an error
// it waits (1s, doubling to 30s) and asks again from scratch.
func (f *follower) follow(what string, get func(index uint64) (uint64, error)) {
	defer f.s.done.Done()
	var index uint64
	backoff := time.Second
	for {
		next, err := get(index)
		select {
		case <-f.s.stop:
			return
		default:
		}
		if err != nil {
			f.s.setErr(err)
			f.s.log.Warn("consul connect CA: "+what+" not fetched", "err", err, "retry_in", backoff)
			select {
			case <-f.s.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			index = 0
			continue
		}
		backoff = time.Second
		if next < index { // the index went back (a restarted agent): start over
			next = 0
		}
		index = next
	}
}

func (f *follower) query(index uint64) *api.QueryOptions {
	return &api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}
}

func (f *follower) roots(index uint64) (uint64, error) {
	list, meta, err := f.agent.ConnectCARoots(f.query(index))
	if err != nil {
		return 0, err
	}
	var pems []string
	for _, r := range list.Roots {
		pems = append(pems, r.RootCertPEM)
	}
	if len(pems) == 0 {
		return 0, errors.New("consul has no CA roots (is connect enabled on the servers?)")
	}
	f.mu.Lock()
	f.rootsPEM = []byte(strings.Join(pems, "\n"))
	f.mu.Unlock()
	f.combine()
	return meta.LastIndex, nil
}

func (f *follower) leaf(index uint64) (uint64, error) {
	leaf, meta, err := f.agent.ConnectCALeaf(MeshdService, f.query(index))
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.certPEM, f.key = []byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM)
	f.mu.Unlock()
	f.combine()
	return meta.LastIndex, nil
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
