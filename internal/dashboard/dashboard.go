package dashboard

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
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
func Handler(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &dash{cfg: cfg}
	mux := http.NewServeMux()
	static, _ := fs.Sub(ui, "ui")
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) })
	mux.HandleFunc("GET /api/v1/services", d.services)
	mux.HandleFunc("GET /api/v1/services/{name}", d.service)
	mux.HandleFunc("GET /api/v1/report", d.report)
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

type dash struct{ cfg Config }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// span reads ?range= (default 5m).
func span(r *http.Request) (time.Duration, bool) {
	v := r.URL.Query().Get("range")
	if v == "" {
		return 5 * time.Minute, true
	}
	d, ok := Ranges[v]
	return d, ok
}

// gather is the mesh as the meshds in scope report it: this one, and with
// ?scope=mesh (the default) every other that answers in time.
func (d *dash) gather(r *http.Request, d0 time.Duration, series string) *mesh {
	ctx := r.Context()
	reports := []Report{d.cfg.Self(ctx, d0, series)}
	whole := r.URL.Query().Get("scope") != "local"
	if whole && d.cfg.Peers != nil && d.cfg.Fetch != nil {
		peers := d.cfg.Peers(ctx)
		got := make([]Report, len(peers))
		var wg sync.WaitGroup
		for i, p := range peers {
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, peerTimeout)
				defer cancel()
				rep, err := d.cfg.Fetch(pctx, p, d0, series)
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
	sp, ok := span(r)
	if !ok {
		http.Error(w, "range: want 1m, 5m, 15m or 1h", http.StatusBadRequest)
		return
	}
	m := d.gather(r, sp, "")
	callers := map[string]map[string]bool{}
	for e := range m.edges {
		if callers[e.Service] == nil {
			callers[e.Service] = map[string]bool{}
		}
		callers[e.Service][e.Caller] = true
	}
	secs := m.covered(sp)
	v := ServicesView{Seconds: secs, Meshds: m.meshds, Services: []ServiceRow{}}
	for _, name := range m.names() {
		row := ServiceRow{Name: name, Callers: len(callers[name]), Instances: m.instances[name]}
		if win := m.services[name]; win != nil {
			row.Figures = win.Figures(secs)
		} else {
			row.Figures = figures.Window{}.Figures(secs)
		}
		v.Services = append(v.Services, row)
	}
	writeJSON(w, v)
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
	sp, ok := span(r)
	if !ok {
		http.Error(w, "range: want 1m, 5m, 15m or 1h", http.StatusBadRequest)
		return
	}
	name := r.PathValue("name")
	m := d.gather(r, sp, name)
	edgeSp := min(sp, figures.EdgeKeep)
	secs, edgeSecs := m.covered(sp), m.covered(edgeSp)
	v := ServiceView{Name: name, Seconds: secs, EdgeSeconds: edgeSecs, Meshds: m.meshds, Instances: m.instances[name]}
	win := figures.Window{}
	if w := m.services[name]; w != nil {
		win = *w
	}
	v.Figures = win.Figures(secs)
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
	v.Callers, v.Callees, v.Methods = rows(callers, edgeSecs), rows(callees, edgeSecs), rows(methods, edgeSecs)
	if d.cfg.Details != nil {
		v.Details = d.cfg.Details(name)
	}
	steps := slices.Sorted(func(yield func(int64) bool) {
		for k := range m.series {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range steps {
		v.Series = append(v.Series, Point{At: time.Unix(k*int64(figures.Step/time.Second), 0), Figures: m.series[k].Figures(figures.Step.Seconds())})
	}
	if len(v.Instances) == 0 && len(v.Series) == 0 && win.Calls == 0 && !m.known[name] {
		http.Error(w, "no service "+name+" in the mesh", http.StatusNotFound)
		return
	}
	writeJSON(w, v)
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
	sp, ok := span(r)
	if !ok {
		http.Error(w, "range: want 1m, 5m, 15m or 1h", http.StatusBadRequest)
		return
	}
	writeJSON(w, d.cfg.Self(r.Context(), sp, r.URL.Query().Get("series")))
}
