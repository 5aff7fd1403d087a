package meshd

import (
	"context"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/trust"
)

// hostTLS describes the host boundary for logs and /status.
func (d *Daemon) hostTLS() string {
	switch {
	case d.peerLis == nil:
		return "none (no host listener)"
	case d.cfg.Trust == nil:
		return "off (plaintext)"
	}
	return "mTLS 1.3, identities from " + d.cfg.Trust.Status().Source
}

// Status is what /status and `meshctl status` show.
type Status struct {
	Node string `json:"node"`
	Zone string `json:"zone,omitempty"`
	// ZoneMeshds counts the meshds (the callers) per zone, as zone-aware
	// balancing last saw them.
	ZoneMeshds map[string]int `json:"zone_meshds,omitempty"`
	Listen     string         `json:"listen"`
	PeerListen string         `json:"peer_listen,omitempty"`
	Advertise  string         `json:"advertise"`
	// Trust is the host boundary: how it is secured, and this meshd's identity.
	Trust    Trust                `json:"trust"`
	Uptime   string               `json:"uptime"`
	Ready    bool                 `json:"ready"`
	Registry discovery.Status     `json:"registry"`
	Local    []discovery.Instance `json:"local_instances"`
	Remote   map[string][]string  `json:"services"` // service → instance ids, as routing sees them (with Consul: the services this meshd follows)
	Peers    []string             `json:"peers"`
	Conns    int                  `json:"connections"`
	InFlight int                  `json:"calls_in_flight"`
	Relayed  int64                `json:"calls_relayed"`
	Refused  int64                `json:"calls_refused"`
	TimedOut int64                `json:"calls_timed_out"`
	Limited  int64                `json:"calls_rate_limited"`
	Retried  int64                `json:"calls_retried"`
	// BudgetExhausted counts retries the retry budget refused.
	BudgetExhausted int64 `json:"retries_refused_by_budget"`
}

// Status reports the daemon's state.
func (d *Daemon) Status(ctx context.Context) Status {
	d.mu.Lock()
	ready, nconns := d.ready, len(d.conns)
	d.mu.Unlock()
	rs := d.relay.Stats()
	st := Status{
		Node:       d.cfg.NodeName,
		Zone:       d.cfg.Zone,
		ZoneMeshds: *d.zoneMeshds.Load(),
		Listen:     d.Addr(),
		PeerListen: d.PeerAddr(),
		Advertise:  d.cfg.Advertise,
		Trust:      d.trustStatus(),
		Uptime:     time.Since(d.started).Round(time.Second).String(),
		Ready:      ready,
		Registry:   d.registry.Status(),
		Local:      d.localInstances(),
		Remote:     map[string][]string{},
		Peers:      d.relay.Peers(),
		Conns:      nconns,
		InFlight:   d.relay.InFlight(),
		Relayed:    rs.Relayed,
		Refused:    rs.Refused,
		TimedOut:   rs.TimedOut,
		Retried:    rs.Retried,
		Limited:    rs.RateLimited,

		BudgetExhausted: rs.BudgetExhausted,
	}
	known := map[string][]discovery.Instance{}
	if f, ok := d.registry.(discovery.Following); ok {
		known = f.Followed() // looking every service up would follow them all
	} else {
		services, _ := d.registry.Services(ctx)
		for _, s := range services {
			known[s], _ = d.registry.Instances(ctx, s)
		}
	}
	for s, insts := range known {
		for _, i := range insts {
			st.Remote[s] = append(st.Remote[s], i.ID)
		}
	}
	return st
}

// Trust is what /status shows of the boundaries and the rules.
type Trust struct {
	HostBoundary     string        `json:"host_boundary"`
	Identity         *trust.Status `json:"identity,omitempty"`
	AdvertiseRule    string        `json:"advertise_rule"`
	AdvertiseRefused int64         `json:"advertise_refused"`
	Intentions       int           `json:"intentions"` // rules in force
	IntentionChanges int64         `json:"intention_changes"`
}

func (d *Daemon) trustStatus() Trust {
	t := Trust{HostBoundary: d.hostTLS(), AdvertiseRule: d.cfg.AdvertiseRule.String(), AdvertiseRefused: d.advertRefused.Load()}
	if d.cfg.Trust != nil {
		st := d.cfg.Trust.Status()
		t.Identity = &st
	}
	if in := d.cfg.Intentions; in != nil {
		t.Intentions, t.IntentionChanges = in.Current().Len(), in.Changes()
	}
	return t
}
