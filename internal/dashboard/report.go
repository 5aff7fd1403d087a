package dashboard

import (
	"maps"
	"slices"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/figures"
	"github.com/meshrpc/mesh/internal/routing"
)

// Report is what one meshd says of itself: the calls it counted over a
// span, the instances it serves, the breakers it holds.
type Report struct {
	Meshd   string  `json:"meshd"` // its host address
	Node    string  `json:"node"`
	Seconds float64 `json:"seconds"` // the span the windows cover: the range asked, or less on a young meshd
	// Services and Edges are the calls that entered the mesh at this meshd.
	Services map[string]figures.Window `json:"services"`
	Edges    []EdgeWindow              `json:"edges"`
	// Series is the history of the service asked for, if any.
	Series    []figures.Point      `json:"series,omitempty"`
	Instances []discovery.Instance `json:"instances"` // served by this meshd
	Breakers  []routing.Breaker    `json:"breakers"`  // of the instances it calls
	Known     []string             `json:"known"`     // services its registry lists
	Error     string               `json:"error,omitempty"`
}

// EdgeWindow is one edge's calls over a span.
type EdgeWindow struct {
	figures.Edge
	Window figures.Window `json:"window"`
}

// mesh is the sum of Reports: the whole mesh, as the meshds that answered
// see it.
type mesh struct {
	seconds   float64
	meshds    []MeshdState
	services  map[string]*figures.Window
	edges     map[figures.Edge]*figures.Window
	series    map[int64]*figures.Window // by step
	instances map[string][]InstanceState
	known     map[string]bool
}

// MeshdState says whether a meshd answered.
type MeshdState struct {
	Meshd string `json:"meshd"`
	Node  string `json:"node,omitempty"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// InstanceState is one instance: where it is, and its breakers as the
// meshds that call it hold them.
type InstanceState struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	Node  string `json:"node,omitempty"`
	Serve bool   `json:"served"` // its meshd reported it (an app connected to it)
	// Breaker is the worst state any meshd holds it in; Open counts the
	// meshds whose breaker is open.
	Breaker string `json:"breaker"`
	Open    int    `json:"open_at"`
}

// addUp sums reports; complete says they are every meshd's.
func addUp(reports []Report, complete bool) *mesh {
	m := &mesh{services: map[string]*figures.Window{}, edges: map[figures.Edge]*figures.Window{}, series: map[int64]*figures.Window{},
		instances: map[string][]InstanceState{}, known: map[string]bool{}}
	byID := map[string]*InstanceState{}
	svcOf := map[string]string{}
	instance := func(service, id, addr string) *InstanceState {
		if st := byID[id]; st != nil {
			return st
		}
		st := &InstanceState{ID: id, Addr: addr, Breaker: "closed"}
		byID[id], svcOf[id] = st, service
		return st
	}
	for _, r := range reports {
		m.meshds = append(m.meshds, MeshdState{Meshd: r.Meshd, Node: r.Node, OK: r.Error == "", Error: r.Error})
		if r.Error != "" {
			continue
		}
		m.seconds = max(m.seconds, r.Seconds)
		for name, w := range r.Services {
			add(m.services, name, w)
		}
		for _, e := range r.Edges {
			add(m.edges, e.Edge, e.Window)
		}
		for _, p := range r.Series {
			add(m.series, p.At.Unix()/int64(figures.Step/time.Second), p.Window)
		}
		for _, inst := range r.Instances {
			st := instance(inst.Service, inst.ID, inst.Addr)
			st.Node, st.Serve = r.Node, true
			m.known[inst.Service] = true
		}
		for _, b := range r.Breakers {
			st := instance(b.Service, b.ID, b.Addr)
			switch {
			case b.State == "open":
				st.Breaker = "open"
				st.Open++
			case b.State == "half_open" && st.Breaker == "closed":
				st.Breaker = "half_open"
			}
		}
		for _, s := range r.Known {
			m.known[s] = true
		}
	}
	// With every meshd in the mesh answering, an instance no meshd serves
	// has left (a breaker remembers it a while); otherwise it may be one a
	// silent meshd serves, and stays, marked unserved.
	complete = complete && !slices.ContainsFunc(m.meshds, func(s MeshdState) bool { return !s.OK })
	for id, st := range byID {
		if complete && !st.Serve {
			continue
		}
		m.instances[svcOf[id]] = append(m.instances[svcOf[id]], *st)
	}
	for _, list := range m.instances {
		slices.SortFunc(list, func(a, b InstanceState) int { return cmpStrings(a.Addr+a.ID, b.Addr+b.ID) })
	}
	slices.SortFunc(m.meshds, func(a, b MeshdState) int { return cmpStrings(a.Meshd, b.Meshd) })
	return m
}

func add[K comparable](m map[K]*figures.Window, k K, w figures.Window) {
	if m[k] == nil {
		m[k] = &figures.Window{}
	}
	m[k].Add(w)
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// covered is the seconds of d the answering meshds' history covers (the
// oldest's): a rate over a young mesh is not diluted by time it did not see.
func (m *mesh) covered(d time.Duration) float64 {
	if m.seconds == 0 {
		return d.Seconds()
	}
	return min(m.seconds, d.Seconds())
}

// names lists every service the mesh knows of: listed by a registry,
// served, or called.
func (m *mesh) names() []string {
	set := maps.Clone(m.known)
	for s := range m.services {
		set[s] = true
	}
	return slices.Sorted(maps.Keys(set))
}
