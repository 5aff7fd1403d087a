package meshd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/discovery/consul"
	"github.com/meshrpc/mesh/internal/dashboard"
	"github.com/meshrpc/mesh/internal/heapfloor"
	"github.com/meshrpc/mesh/internal/tracequery"
	"github.com/meshrpc/mesh/internal/tracing"
)

// DefaultGCHeapFloor is the heap under which meshd collects no garbage
// (--gc-heap-floor-bytes): its live heap is a few MiB, so the runtime's
// default collected many times a second under load (package heapfloor).
const DefaultGCHeapFloor = 64 << 20

// Run starts meshd with the options and serves until ctx ends, then drains.
func Run(ctx context.Context, o Options, log *slog.Logger) error {
	if o.GCHeapFloor > 0 && os.Getenv("GOGC") == "" {
		defer heapfloor.Start(uint64(o.GCHeapFloor))()
	}
	reg, err := openRegistry(ctx, o, log)
	if err != nil {
		return err
	}
	admin := o.Admin
	if admin == "off" {
		admin = ""
	}
	rate, _ := strconv.ParseFloat(o.TraceRate, 64)
	tracer, err := tracing.New(tracing.Config{ZipkinURL: o.Zipkin, Encoding: o.ZipkinEnc, SampleRate: rate, ServiceName: o.TraceService})
	if err != nil {
		reg.Close()
		return err
	}
	// With Consul, meshd's other configuration (its CA, intentions, policies
	// in KV) comes from the registry's agent.
	var agent *api.Client
	if c, ok := reg.(interface{ Client() *api.Client }); ok {
		agent = c.Client()
	}
	sec, err := openSecurity(o, agent, log)
	if err != nil {
		reg.Close()
		return err
	}
	if o.Zone == "" && agent != nil {
		o.Zone = consulZone(ctx, agent, log)
	}
	servers, _ := o.grpcServers() // validated
	d, err := Start(Config{
		Zone: o.Zone, Listen: o.Listen, ListenUnix: o.ListenUnix, PeerListen: o.PeerListen, Trust: sec.trust, Advertise: o.Advertise, Admin: admin, Pprof: o.Pprof == "on", NoOpsView: o.OpsView == "off", NodeName: o.Node,
		Registry: reg, DrainTimeout: o.DrainTimeout, ForgetAfter: o.ForgetAfter, Logger: log, Policies: o.Policies, Tracer: tracer, Limits: o.limits(),
		Intentions: sec.intentions, AdvertiseRule: sec.rule, ProveToken: sec.prove, Traces: o.traces(),
		GRPC: o.grpcLimits(), GRPCServers: servers,
	})
	if err != nil {
		sec.close()
		reg.Close()
		return err
	}
	policies, stopPolicies := context.WithCancel(context.Background())
	var following sync.WaitGroup
	if agent != nil {
		following.Go(func() { d.followPolicies(policies, agent, o.Policies) })
	}
	<-ctx.Done()
	log.Info("draining")
	err = d.Shutdown(context.Background())
	// Every follower of Consul ends at once, mid-query: meshd exits within
	// its drain time.
	stopPolicies()
	following.Wait()
	sec.close()
	return err
}

// consulZone is the zone the Consul agent's node metadata names (key
// "zone", as `consul agent -node-meta zone:NAME` sets it), or "".
func consulZone(ctx context.Context, agent *api.Client, log *slog.Logger) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var self struct{ Meta map[string]string }
	if _, err := agent.Raw().Query("/v1/agent/self", &self, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		log.Warn("reading the Consul agent's node metadata for this host's zone: no zone", "err", err)
		return ""
	}
	if z := self.Meta[discovery.MetaZone]; z != "" {
		log.Info("zone from the Consul agent's node metadata", "zone", z)
		return z
	}
	return ""
}

// openRegistry picks Consul when configured or found, else the embedded one.
func openRegistry(ctx context.Context, o Options, log *slog.Logger) (discovery.Registry, error) {
	addr, explicit := o.Consul, o.Consul != ""
	if addr == "" {
		addr = os.Getenv("CONSUL_HTTP_ADDR")
		explicit = addr != ""
	}
	if addr == "" {
		addr = "127.0.0.1:8500"
	}
	if addr != "off" && (explicit || o.PeerListen != "") {
		if o.PeerListen == "" {
			return nil, fmt.Errorf("consul at %s: set --peer-listen, the address other meshds call this one at (or --consul off for this host alone)", addr)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		reg, err := consul.New(cctx, consul.Config{
			Address: addr, Token: o.ConsulToken, Datacenter: o.ConsulDC, TTL: o.ConsulTTL, MaxWatches: o.ConsulWatches, UseCache: o.ConsulReads == "cached", Logger: log,
		})
		switch {
		case err != nil:
			return nil, err
		case explicit || reg.Ready():
			// A configured agent that does not answer yet is waited for, never
			// silently replaced: meshd reports not ready until it answers.
			return reg, nil
		}
		reg.Close()
		log.Info("no consul agent found; using the embedded registry (this host only)", "tried", addr)
	}
	if o.PeerListen != "" && o.PeersFile == "" {
		return nil, errors.New("--peer-listen without Consul or --peers-file: no other meshd would know of this one")
	}
	local := discovery.NewLocal()
	if o.PeersFile != "" {
		if err := local.LoadStatic(o.PeersFile); err != nil {
			return nil, err
		}
	}
	return local, nil
}

// traces is the trace backend the dashboard reads (nil: --trace-query unset).
func (o Options) traces() *dashboard.Traces {
	if o.TraceQuery == "" {
		return nil
	}
	return &dashboard.Traces{Backend: tracequery.Backend{API: o.TraceQueryAPI, URL: strings.TrimRight(o.TraceQuery, "/")},
		UI: strings.TrimRight(o.TraceUI, "/"), Service: o.TraceService}
}
