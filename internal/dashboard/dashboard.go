package dashboard

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshrpc/mesh/internal/figures"
	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/router"
)

//go:embed ui
var ui embed.FS

// Config is what the dashboard reads of its meshd.
type Config struct {
	// Self is this meshd's Report over span, with series' history when
	// series is not "".
	Self func(ctx context.Context, span time.Duration, series string) Report
	// Peers lists the other meshds' host addresses; Fetch asks one for its
	// Report (over the host boundary). Nil: this meshd only.
	Peers func(ctx context.Context) []string
	Fetch func(ctx context.Context, peer string, span time.Duration, series string) (Report, error)
	// Details says what governs a service here: policy, intentions.
	Details func(service string) Details
	// Since reads the calls this meshd recorded after a cursor
	// (relay.Relay.Since).
	Since func(cursor uint64, limit int) (calls []relay.Explanation, next, missed uint64)
	// Traces reads the trace backend; nil: none configured.
	Traces *Traces
	Logger *slog.Logger
}

// Details is what governs calls to a service on this meshd.
type Details struct {
	Policy            router.Policy     `json:"policy"`
	PolicySource      string            `json:"policy_source"`
	Rejections        []Rejection       `json:"policy_rejections"`
	Intentions        []intentions.Rule `json:"intentions"`
	IntentionDefaults []string          `json:"intention_defaults"`
}

// Rejection is a policy reload that was refused (the last good policy
// stayed in force).
type Rejection struct {
	At      time.Time `json:"at"`
	Service string    `json:"service"`
	Source  string    `json:"source"`
	Error   string    `json:"error"`
}

// Ranges are the spans a view can be asked for; edges are kept for
// figures.EdgeKeep at most.
var Ranges = map[string]time.Duration{"1m": time.Minute, "5m": 5 * time.Minute, "15m": 15 * time.Minute, "1h": time.Hour}

// peerTimeout bounds the wait for one meshd's Report.
const peerTimeout = 2 * time.Second

// Handler serves the page under /ui/ and the JSON under /api/v1/.
func (v *Views) Handler() http.Handler {
	d := &dash{v: v}
	mux := http.NewServeMux()
	static, _ := fs.Sub(ui, "ui")
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) })
	mux.HandleFunc("GET /api/v1/services", d.services)
	mux.HandleFunc("GET /api/v1/services/{name}", d.service)
	mux.HandleFunc("GET /api/v1/report", d.report)
	mux.HandleFunc("GET /api/v1/edges", d.edges)
	mux.HandleFunc("GET /api/v1/tail", d.tail)
	mux.HandleFunc("GET /api/v1/traces", d.traces)
	return secure(mux)
}

// secure sets the headers that keep the page's own code the only code it
// runs: no inline script, nothing from elsewhere.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

type dash struct{ v *Views }

// Views computes what the dashboard (and meshctl stat, top and tap) show.
type Views struct{ cfg Config }

// NewViews returns the Views of a meshd.
func NewViews(cfg Config) *Views {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Views{cfg: cfg}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// gather is the mesh as the meshds in scope report it: this one, and when
// whole every other that answers in time.
func (v *Views) gather(ctx context.Context, d0 time.Duration, whole bool, series string) *mesh {
	reports := []Report{v.cfg.Self(ctx, d0, series)}
	if whole && v.cfg.Peers != nil && v.cfg.Fetch != nil {
		peers := v.cfg.Peers(ctx)
		got := make([]Report, len(peers))
		var wg sync.WaitGroup
		for i, p := range peers {
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, peerTimeout)
				defer cancel()
				rep, err := v.cfg.Fetch(pctx, p, d0, series)
				if err != nil {
					rep = Report{Meshd: p, Error: err.Error()}
				}
				got[i] = rep
			})
		}
		wg.Wait()
		reports = append(reports, got...)
	}
	return addUp(reports, whole)
}

// ServiceRow is one service in the services view.
type ServiceRow struct {
	Name string `json:"name"`
	figures.Figures
	Callers   int             `json:"callers"`
	Instances []InstanceState `json:"instances"`
}

// ServicesView is the answer of /api/v1/services.
type ServicesView struct {
	Seconds  float64      `json:"range_seconds"`
	Meshds   []MeshdState `json:"meshds"`
	Services []ServiceRow `json:"services"`
}

func (d *dash) services(w http.ResponseWriter, r *http.Request) {
	sp, whole, ok := scope(w, r)
	if ok {
		writeJSON(w, d.v.Services(r.Context(), sp, whole))
	}
}

// scope reads ?range= and ?scope= (mesh, the default, or local), or
// answers the request with what is wrong.
func scope(w http.ResponseWriter, r *http.Request) (span time.Duration, whole, ok bool) {
	span, ok = Ranges[cmp.Or(r.URL.Query().Get("range"), "5m")]
	if !ok {
		http.Error(w, "range: want 1m, 5m, 15m or 1h", http.StatusBadRequest)
		return 0, false, false
	}
	switch r.URL.Query().Get("scope") {
	case "", "mesh":
		whole = true
	case "local":
	default:
		http.Error(w, "scope: want mesh or local", http.StatusBadRequest)
		return 0, false, false
	}
	return span, whole, true
}

// Services is every service in scope with its figures over sp.
func (v *Views) Services(ctx context.Context, sp time.Duration, whole bool) ServicesView {
	m := v.gather(ctx, sp, whole, "")
	callers := map[string]map[string]bool{}
	for e := range m.edges {
		if callers[e.Service] == nil {
			callers[e.Service] = map[string]bool{}
		}
		callers[e.Service][e.Caller] = true
	}
	secs := m.covered(sp)
	out := ServicesView{Seconds: secs, Meshds: m.meshds, Services: []ServiceRow{}}
	for _, name := range m.names() {
		row := ServiceRow{Name: name, Callers: len(callers[name]), Instances: m.instances[name]}
		win := figures.Window{}
		if w := m.services[name]; w != nil {
			win = *w
		}
		row.Figures = win.Figures(secs)
		out.Services = append(out.Services, row)
	}
	return out
}

// EdgeFigures is one caller → service → method edge with its figures.
type EdgeFigures struct {
	figures.Edge
	figures.Figures
}

// EdgesView is every edge in scope, busiest first.
type EdgesView struct {
	Seconds float64       `json:"range_seconds"`
	Meshds  []MeshdState  `json:"meshds"`
	Edges   []EdgeFigures `json:"edges"`
}

// Edges is every edge in scope with its figures over sp (at most
// figures.EdgeKeep), busiest first.
func (v *Views) Edges(ctx context.Context, sp time.Duration, whole bool) EdgesView {
	sp = min(sp, figures.EdgeKeep)
	m := v.gather(ctx, sp, whole, "")
	secs := m.covered(sp)
	out := EdgesView{Seconds: secs, Meshds: m.meshds, Edges: []EdgeFigures{}}
	for e, w := range m.edges {
		out.Edges = append(out.Edges, EdgeFigures{Edge: e, Figures: w.Figures(secs)})
	}
	slices.SortFunc(out.Edges, func(a, b EdgeFigures) int {
		return cmp.Or(cmp.Compare(b.Calls, a.Calls), strings.Compare(a.Service+a.Method+a.Caller, b.Service+b.Method+b.Caller))
	})
	return out
}

// EdgeRow is one caller, callee or method of a service with its figures.
type EdgeRow struct {
	Name string `json:"name"`
	figures.Figures
}

// Point is one step of a service's history.
type Point struct {
	At time.Time `json:"at"`
	figures.Figures
}

// ServiceView is the answer of /api/v1/services/{name}.
type ServiceView struct {
	Name string `json:"name"`
	figures.Figures
	Seconds     float64         `json:"range_seconds"`
	EdgeSeconds float64         `json:"edge_range_seconds"` // callers, callees and methods: at most figures.EdgeKeep
	Meshds      []MeshdState    `json:"meshds"`
	Callers     []EdgeRow       `json:"callers"`
	Callees     []EdgeRow       `json:"callees"`
	Methods     []EdgeRow       `json:"methods"`
	Instances   []InstanceState `json:"instances"`
	Details     Details         `json:"details"` // as this meshd has them
	Series      []Point         `json:"series"`
}

func (d *dash) service(w http.ResponseWriter, r *http.Request) {
	sp, whole, ok := scope(w, r)
	if !ok {
		return
	}
	v, found := d.v.Service(r.Context(), r.PathValue("name"), sp, whole)
	if !found {
		http.Error(w, "no service "+v.Name+" in the mesh", http.StatusNotFound)
		return
	}
	writeJSON(w, v)
}

// Service is one service in scope over sp: its figures, callers, callees,
// methods, instances, what governs it, and its history; found is false
// when the mesh knows nothing of it.
func (v *Views) Service(ctx context.Context, name string, sp time.Duration, whole bool) (out ServiceView, found bool) {
	m := v.gather(ctx, sp, whole, name)
	edgeSp := min(sp, figures.EdgeKeep)
	secs, edgeSecs := m.covered(sp), m.covered(edgeSp)
	out = ServiceView{Name: name, Seconds: secs, EdgeSeconds: edgeSecs, Meshds: m.meshds, Instances: m.instances[name]}
	win := figures.Window{}
	if w := m.services[name]; w != nil {
		win = *w
	}
	out.Figures = win.Figures(secs)
	callers, callees, methods := map[string]*figures.Window{}, map[string]*figures.Window{}, map[string]*figures.Window{}
	for e, w := range m.edges {
		if e.Service == name {
			add(callers, e.Caller, *w)
			add(methods, e.Method, *w)
		}
		if e.Caller == name {
			add(callees, e.Service, *w)
		}
	}
	out.Callers, out.Callees, out.Methods = rows(callers, edgeSecs), rows(callees, edgeSecs), rows(methods, edgeSecs)
	if v.cfg.Details != nil {
		out.Details = v.cfg.Details(name)
	}
	for _, k := range slices.Sorted(maps.Keys(m.series)) {
		out.Series = append(out.Series, Point{At: time.Unix(k*int64(figures.Step/time.Second), 0), Figures: m.series[k].Figures(figures.Step.Seconds())})
	}
	found = len(out.Instances) > 0 || len(out.Series) > 0 || win.Calls > 0 || m.known[name]
	return out, found
}

func rows(m map[string]*figures.Window, seconds float64) []EdgeRow {
	out := []EdgeRow{}
	for name, w := range m {
		out = append(out, EdgeRow{Name: name, Figures: w.Figures(seconds)})
	}
	slices.SortFunc(out, func(a, b EdgeRow) int { return cmp.Or(cmp.Compare(b.Calls, a.Calls), strings.Compare(a.Name, b.Name)) })
	return out
}

// report serves this meshd's own Report, for tools.
func (d *dash) report(w http.ResponseWriter, r *http.Request) {
	if sp, _, ok := scope(w, r); ok {
		writeJSON(w, d.v.cfg.Self(r.Context(), sp, r.URL.Query().Get("series")))
	}
}

// edges serves every edge, busiest first.
func (d *dash) edges(w http.ResponseWriter, r *http.Request) {
	if sp, whole, ok := scope(w, r); ok {
		writeJSON(w, d.v.Edges(r.Context(), sp, whole))
	}
}
