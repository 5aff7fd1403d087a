package meshd

import (
	"context"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/version"
)

// newMetrics is the registry /metrics serves: the Go runtime's and the
// process's collectors, the build, and meshd's own figures; the relay
// registers its collectors (and its Balancer's, and the calls per edge)
// itself.
func newMetrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	ver, commit, _ := version.Info()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "mesh_build_info",
			Help:        "Always 1; the labels say which build of meshd runs.",
			ConstLabels: prometheus.Labels{"version": ver, "commit": commit, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	return reg
}

// registerMetrics adds the daemon's own figures to reg.
func (d *Daemon) registerMetrics(reg prometheus.Registerer) {
	backend := prometheus.Labels{"backend": d.registry.Status().Backend}
	gauge := func(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	counter := func(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	reg.MustRegister(
		gauge("mesh_registry_healthy", "Whether the registry backend answers.", backend,
			func() float64 { return b2f(d.registry.Status().Healthy) }),
		gauge("mesh_registry_stale", "Whether lookups are answered from a cache the backend could not refresh.", backend,
			func() float64 { return b2f(d.registry.Status().Stale) }),
		counter("mesh_registry_stale_lookups_total", "Lookups answered from a stale cache.", backend,
			func() float64 { return float64(d.registry.Status().StaleLookups) }),
		counter("mesh_trace_spans_dropped_total", "Spans dropped because the export queue was full or the backend failed.", nil,
			func() float64 { return float64(d.cfg.Tracer.Dropped()) }),
		counter("mesh_trace_spans_exported_total", "Spans sent to the trace backend.", nil,
			func() float64 { return float64(d.cfg.Tracer.Exported()) }),
		gauge("mesh_connections", "Open TChannel connections.", nil, func() float64 {
			d.mu.Lock()
			defer d.mu.Unlock()
			return float64(len(d.conns))
		}),
		counter("mesh_log_suppressed_total", "Log records not written because the same message came too often.", nil,
			func() float64 { return float64(d.logLimit.Suppressed()) }),
		gauge("mesh_connections_accepted", "Accepted connections held, handshaking ones included.", nil,
			func() float64 { return float64(d.adm.count()) }),
		counter("mesh_connections_refused_total", "Connections closed at once for being over --max-connections or --max-connections-per-addr.", nil,
			func() float64 { return float64(d.adm.refused.Load()) }),
		counter("mesh_proof_refused_total", proofRefusedHelp, prometheus.Labels{"call": "advertise"},
			func() float64 { return float64(d.advertRefused.Load()) }),
		counter("mesh_proof_refused_total", proofRefusedHelp, prometheus.Labels{"call": "identify"},
			func() float64 { return float64(d.identifyRefused.Load()) }),
		gauge("mesh_queued_bytes", "Bytes queued for peers that are not keeping up, past each connection's first 64 KiB (bounded by --max-queued-bytes-total).", nil,
			func() float64 { return float64(d.queued.Bytes()) }),
	)
	if t := d.cfg.Trust; t != nil {
		source := prometheus.Labels{"source": t.Status().Source}
		reg.MustRegister(
			gauge("mesh_tls_cert_expiry_timestamp_seconds", "When the certificate this meshd proves itself with on the host boundary expires, in Unix seconds (0: none yet).", source,
				func() float64 {
					if na := t.Status().NotAfter; !na.IsZero() {
						return float64(na.Unix())
					}
					return 0
				}),
			counter("mesh_tls_cert_rotations_total", "Certificates (and roots) this meshd took on since it started.", source,
				func() float64 { return float64(t.Status().Rotations) }),
		)
	}
	for i, why := range closedNames {
		reg.MustRegister(counter("mesh_connections_closed_total", "TChannel connections closed, by why.",
			prometheus.Labels{"reason": why}, func() float64 { return float64(d.closed[i].Load()) }))
	}
}

const proofRefusedHelp = "Advertise and identify calls refused: no proof the app is the service it names (advertise rule, or Consul refused its token)."

// metricsHandler serves reg in the format the scraper asks for: OpenMetrics
// (with the latency exemplars) or Prometheus text.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: reg})
}

// forget has the relay drop, every quarter of ForgetAfter, what it learned
// of instances that left, until Shutdown. It also keeps the registry
// following the meshds (a first lookup answers with this meshd alone), so
// the dashboard's whole-mesh view finds them all at once.
func (d *Daemon) forget() {
	t := time.NewTicker(d.cfg.ForgetAfter / 4)
	defer t.Stop()
	d.registry.Lookup(meshdService)
	for {
		select {
		case <-d.stop:
			return
		case now := <-t.C:
			d.relay.Forget(now, d.cfg.ForgetAfter)
			d.registry.Lookup(meshdService)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// zonesEvery is how often meshd counts the meshds per zone: a new meshd
// shifts the zones' shares of callers within it.
const zonesEvery = 2 * time.Second

// followZones tells the relay, every zonesEvery until Shutdown, how many
// meshds each zone has: the callers whose share a zone's instances must
// carry (routing's zone-aware balancing).
func (d *Daemon) followZones() {
	t := time.NewTicker(zonesEvery)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), zonesEvery)
		meshds, err := d.registry.Instances(ctx, meshdService)
		cancel()
		callers := map[string]int{}
		for _, m := range meshds {
			if z := m.Meta[discovery.MetaZone]; z != "" {
				callers[z]++
			}
		}
		if err != nil {
			d.log.Debug("counting meshds per zone", "err", err)
		}
		if err == nil || len(callers) > 0 {
			d.relay.SetZones(d.cfg.Zone, callers)
			d.zoneMeshds.Store(&callers)
		}
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
	}
}
