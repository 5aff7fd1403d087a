package meshd

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strconv"
)

// adminHandler serves /health (ready), /live, /status, /calls (recent
// routing decisions), /metrics and, when enabled, /debug/pprof.
func (d *Daemon) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		ready := d.ready
		d.mu.Unlock()
		if !ready {
			http.Error(w, "not ready: draining or starting", http.StatusServiceUnavailable)
			return
		}
		if st := d.registry.Status(); !st.Ready {
			http.Error(w, "not ready: "+st.Backend+": "+st.Detail, http.StatusServiceUnavailable)
			return
		}
		if t := d.cfg.Trust; t != nil && !t.Status().Ready {
			http.Error(w, "not ready: no identity yet for the host boundary: "+t.Status().Error, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	// /live answers while the process serves, ready or not: a liveness probe
	// must not restart a meshd that waits for its Consul agent.
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(d.Status(r.Context()))
	})
	mux.HandleFunc("GET /calls", func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		if limit <= 0 {
			limit = 100
		}
		span, _ := strconv.ParseUint(r.URL.Query().Get("span"), 16, 64)
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(d.relay.Recent(r.URL.Query().Get("service"), span, limit))
	})
	mux.Handle("GET /metrics", metricsHandler(d.metrics))
	var ops http.Handler = d.views.Handler()
	if d.cfg.NoOpsView {
		ops = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "the ops view is off on this meshd (--ops-view off)", http.StatusNotFound)
		})
	}
	mux.Handle("GET /{$}", ops)
	mux.Handle("GET /ui/", ops)
	mux.Handle("GET /api/v1/", ops)
	if d.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
