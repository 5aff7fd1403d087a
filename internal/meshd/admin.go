package meshd

import (
	"encoding/json"
	"fmt"
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
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		d.relay.WriteMetrics(w)
		st := d.registry.Status()
		fmt.Fprintf(w, "# HELP mesh_registry_healthy Whether the registry backend answers.\n# TYPE mesh_registry_healthy gauge\nmesh_registry_healthy{backend=%q} %d\n", st.Backend, b2i(st.Healthy))
		fmt.Fprintf(w, "# HELP mesh_registry_stale Whether lookups are answered from a cache the backend could not refresh.\n# TYPE mesh_registry_stale gauge\nmesh_registry_stale{backend=%q} %d\n", st.Backend, b2i(st.Stale))
		fmt.Fprintf(w, "# HELP mesh_registry_stale_lookups_total Lookups answered from a stale cache.\n# TYPE mesh_registry_stale_lookups_total counter\nmesh_registry_stale_lookups_total %d\n", st.StaleLookups)
		fmt.Fprintf(w, "# HELP mesh_trace_spans_dropped_total Spans dropped because the export queue was full or the backend failed.\n# TYPE mesh_trace_spans_dropped_total counter\nmesh_trace_spans_dropped_total %d\n", d.cfg.Tracer.Dropped())
		fmt.Fprintf(w, "# HELP mesh_trace_spans_exported_total Spans sent to the trace backend.\n# TYPE mesh_trace_spans_exported_total counter\nmesh_trace_spans_exported_total %d\n", d.cfg.Tracer.Exported())
		d.mu.Lock()
		n := len(d.conns)
		d.mu.Unlock()
		fmt.Fprintf(w, "# HELP mesh_connections Open TChannel connections.\n# TYPE mesh_connections gauge\nmesh_connections %d\n", n)
		fmt.Fprintf(w, "# HELP mesh_log_suppressed_total Log records not written because the same message came too often.\n# TYPE mesh_log_suppressed_total counter\nmesh_log_suppressed_total %d\n", d.logLimit.Suppressed())
		fmt.Fprintf(w, "# HELP mesh_connections_accepted Accepted connections held, handshaking ones included.\n# TYPE mesh_connections_accepted gauge\nmesh_connections_accepted %d\n", d.adm.count())
		fmt.Fprintf(w, "# HELP mesh_connections_refused_total Connections closed at once for being over --max-connections or --max-connections-per-addr.\n# TYPE mesh_connections_refused_total counter\nmesh_connections_refused_total %d\n", d.adm.refused.Load())
		d.closed.writeMetrics(w)
		fmt.Fprintf(w, "# HELP mesh_proof_refused_total Advertise and identify calls refused: no proof the app is the service it names (advertise rule, or Consul refused its token).\n# TYPE mesh_proof_refused_total counter\nmesh_proof_refused_total{call=\"advertise\"} %d\nmesh_proof_refused_total{call=\"identify\"} %d\n", d.advertRefused.Load(), d.identifyRefused.Load())
		fmt.Fprintf(w, "# HELP mesh_queued_bytes Bytes queued for peers that are not keeping up, past each connection's first 64 KiB (bounded by --max-queued-bytes-total).\n# TYPE mesh_queued_bytes gauge\nmesh_queued_bytes %d\n", d.queued.Bytes())
	})
	if d.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
