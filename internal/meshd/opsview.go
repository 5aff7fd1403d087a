package meshd

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/dashboard"
	"github.com/meshrpc/mesh/internal/figures"
	"github.com/meshrpc/mesh/internal/relay"
)

// The ops view: meshd keeps an hour of its golden figures (internal/figures,
// sampled every figures.Step), serves the dashboard on its admin port, and
// answers other meshds' meshd::report calls with its own Report, so any
// meshd shows the whole mesh.

// sample reads the relay's counters into the history every Step, until
// Shutdown.
func (d *Daemon) sample() {
	t := time.NewTicker(figures.Step)
	defer t.Stop()
	d.history.Add(time.Now(), d.relay.CallTotals())
	for {
		select {
		case <-d.stop:
			return
		case now := <-t.C:
			d.history.Add(now, d.relay.CallTotals())
		}
	}
}

// report is this meshd's Report over span, with series' history when
// series is not "".
func (d *Daemon) report(ctx context.Context, span time.Duration, series string) dashboard.Report {
	r := dashboard.Report{
		Meshd:     d.cfg.Advertise,
		Node:      d.cfg.NodeName,
		Seconds:   d.history.Covered(span).Seconds(),
		Services:  d.history.Services(span),
		Instances: d.localInstances(),
		Breakers:  d.relay.Breakers(),
	}
	for e, w := range d.history.Edges(span) {
		r.Edges = append(r.Edges, dashboard.EdgeWindow{Edge: e, Window: w})
	}
	if series != "" {
		r.Series = d.history.Series(series, span)
	}
	if known, err := d.registry.Services(ctx); err == nil {
		r.Known = known
	}
	return r
}

// self is this meshd as an instance of its own service: every meshd with
// a host listener registers it, so that any meshd finds all the others,
// those whose hosts serve nothing too.
func (d *Daemon) self() (discovery.Instance, bool) {
	if d.peerLis == nil || d.cfg.Advertise == "" {
		return discovery.Instance{}, false
	}
	inst := discovery.Instance{Service: meshdService, ID: meshdService + "@" + d.cfg.Advertise, Addr: d.cfg.Advertise}
	if d.cfg.Zone != "" {
		inst.Meta = map[string]string{discovery.MetaZone: d.cfg.Zone}
	}
	return inst, true
}

// registerSelf registers self; without it other meshds find this one only
// while it delivers some service.
func (d *Daemon) registerSelf() {
	inst, ok := d.self()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.registry.Register(ctx, inst); err != nil {
		d.log.Warn("meshd not registered as a meshd: other meshds' dashboards see it only while it delivers a service", "err", err)
	}
}

// peers lists the other meshds: the registered meshds, and those that
// deliver an instance of some service, as the registry says.
func (d *Daemon) peers(ctx context.Context) []string {
	set := map[string]bool{}
	services, err := d.registry.Services(ctx)
	if err != nil {
		d.log.Warn("listing the other meshds", "err", err)
	}
	for _, s := range services {
		insts, err := d.registry.Instances(ctx, s)
		if err != nil {
			d.log.Warn("listing the other meshds", "service", s, "err", err)
			continue
		}
		for _, inst := range insts {
			if inst.Addr != d.cfg.Advertise {
				set[inst.Addr] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// fetchReport asks the meshd at peer for its Report over the host
// boundary (mutual TLS when it is on).
func (d *Daemon) fetchReport(ctx context.Context, peer string, span time.Duration, series string) (dashboard.Report, error) {
	var rep dashboard.Report
	c, err := d.relay.Peer(peer)
	if err != nil {
		return rep, err
	}
	q, _ := json.Marshal(reportQuery{Range: span.String(), Series: series})
	res, err := c.Call(ctx, &conn.Request{Service: meshdService, Method: methodReport, Arg2: []byte("{}"), Arg3: q,
		Headers: frame.AppendHeader(nil, frame.HeaderArgScheme, "json")})
	if err != nil {
		return rep, err
	}
	if res.Code != frame.ResOK {
		return rep, fmt.Errorf("%s answered an application error: %s", peer, res.Arg3)
	}
	if err := json.Unmarshal(res.Arg3, &rep); err != nil {
		return rep, fmt.Errorf("%s's report: %w", peer, err)
	}
	return rep, nil
}

// methodReport is meshd's own method that answers with its Report.
const methodReport = "report"

type reportQuery struct {
	Range  string `json:"range"`  // a Go duration, at most figures.ServiceKeep
	Series string `json:"series"` // a service whose history to add
}

func (d *Daemon) handleReport(ctx context.Context, arg3 []byte) (any, error) {
	var q reportQuery
	if err := json.Unmarshal(arg3, &q); err != nil {
		return nil, frame.Errorf(frame.ErrCodeBadRequest, `report wants {"range": DURATION, "series": SERVICE}`)
	}
	span, err := time.ParseDuration(q.Range)
	if err != nil || span <= 0 || span > figures.ServiceKeep {
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "report: range %q: want a duration up to %v", q.Range, figures.ServiceKeep)
	}
	return d.report(ctx, span, q.Series), nil
}

// details says what governs calls to service on this meshd.
func (d *Daemon) details(service string) dashboard.Details {
	det := dashboard.Details{Policy: d.relay.Policy(service)}
	det.PolicySource, det.Rejections = d.policyLog.about(service)
	if d.cfg.Intentions != nil {
		det.Intentions, det.IntentionDefaults = d.cfg.Intentions.Current().Applying(service)
	}
	return det
}

// policyLog remembers where each service's policy came from and the
// reloads that were refused.
type policyLog struct {
	mu         sync.Mutex
	sources    map[string]string // service → where its policy is from
	rejections []dashboard.Rejection
}

// maxRejections is how many refused reloads are remembered.
const maxRejections = 50

func (l *policyLog) setSources(s map[string]string) {
	l.mu.Lock()
	l.sources = s
	l.mu.Unlock()
}

// reject records a refused reload; the same refusal again (every KV
// update applies the keys anew) only moves its time.
func (l *policyLog) reject(r dashboard.Rejection) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.rejections {
		if o := &l.rejections[i]; o.Service == r.Service && o.Source == r.Source && o.Error == r.Error {
			o.At = r.At
			return
		}
	}
	l.rejections = append(l.rejections, r)
	if len(l.rejections) > maxRejections {
		l.rejections = slices.Delete(l.rejections, 0, len(l.rejections)-maxRejections)
	}
}

func (l *policyLog) about(service string) (source string, rejected []dashboard.Rejection) {
	l.mu.Lock()
	defer l.mu.Unlock()
	source = l.sources[service]
	if source == "" {
		source = l.sources["*"]
	}
	if source == "" {
		source = "defaults"
	}
	for _, r := range l.rejections {
		if r.Service == service {
			rejected = append(rejected, r)
		}
	}
	return source, rejected
}

// opsQuery is what meshctl stat, top and tap ask meshd.
type opsQuery struct {
	Range   string               `json:"range"`   // 1m, 5m, 15m or 1h (default 5m)
	Scope   string               `json:"scope"`   // mesh (default) or local
	Service string               `json:"service"` // stat: one service's view
	Cursor  *uint64              `json:"cursor"`  // tail: the calls from this one (none: from now)
	Filter  dashboard.TailFilter `json:"filter"`  // tail
}

// handleOps answers meshctl's stat (the services, or one), top (the
// edges) and tail (the calls since a cursor).
func (d *Daemon) handleOps(ctx context.Context, method string, arg3 []byte) (any, error) {
	var q opsQuery
	if len(arg3) > 0 {
		if err := json.Unmarshal(arg3, &q); err != nil {
			return nil, frame.Errorf(frame.ErrCodeBadRequest, "%s: %v", method, err)
		}
	}
	span, ok := dashboard.Ranges[cmp.Or(q.Range, "5m")]
	if !ok {
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "%s: range %q: want 1m, 5m, 15m or 1h", method, q.Range)
	}
	if q.Scope != "" && q.Scope != "mesh" && q.Scope != "local" {
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "%s: scope %q: want mesh or local", method, q.Scope)
	}
	whole := q.Scope != "local"
	switch method {
	case "stat":
		if q.Service == "" {
			return d.views.Services(ctx, span, whole), nil
		}
		v, found := d.views.Service(ctx, q.Service, span, whole)
		if !found {
			return nil, frame.Errorf(frame.ErrCodeBadRequest, "no service %q in the mesh", q.Service)
		}
		return v, nil
	case "top":
		return d.views.Edges(ctx, span, whole), nil
	}
	if q.Cursor == nil {
		_, next, _ := d.relay.Since(0, 0)
		return dashboard.TailAnswer{Calls: []relay.Explanation{}, Next: next}, nil
	}
	calls, next, missed := d.views.Tail(*q.Cursor, 1000, q.Filter)
	return dashboard.TailAnswer{Calls: append([]relay.Explanation{}, calls...), Next: next, Missed: missed}, nil
}
