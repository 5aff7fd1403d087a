package meshd

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/discovery/consul"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/relay"
)

// The Hyperbahn advertise protocol, as tchannel-go's hyperbahn client speaks it.
const (
	hyperbahnService = "hyperbahn"
	methodAdvertise  = "ad"
	methodUnadvert   = "unad"
)

type adRequest struct {
	Services []struct {
		ServiceName string `json:"serviceName"`
		Cost        int    `json:"cost"`
	} `json:"services"`
}

type adResponse struct {
	ConnectionCount int `json:"connectionCount"`
}

// apps tracks which instances each local app connection advertised.
type apps struct {
	mu    sync.Mutex
	byCon map[*conn.Conn]*app
	seq   int
}

type app struct {
	n         int                           // serial of the connection, for instance ids
	instances map[string]discovery.Instance // by service
}

// HeaderToken is the advertise call's header (in arg2, JSON) with the
// app's Consul ACL token: its proof that it may serve the names.
const HeaderToken = "mesh-token"

func (d *Daemon) handleHyperbahn(ctx context.Context, from *conn.Conn, req *conn.Request) (*conn.Response, error) {
	if src, _ := from.Tag().(*relay.Source); src == nil || src.Meshd {
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "advertise on the host listener: apps advertise to the meshd of their own host")
	}
	body, err := req.ReadBody(1 << 20)
	if err != nil {
		return nil, err
	}
	var ad adRequest
	if err := json.Unmarshal(body, &ad); err != nil {
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "advertise body is not JSON of the form {\"services\":[{\"serviceName\":...}]}: %v", err)
	}
	var names []string
	for _, s := range ad.Services {
		if s.ServiceName == "" || len(s.ServiceName) > 255 {
			return nil, frame.Errorf(frame.ErrCodeBadRequest, "advertise names an invalid service %q", s.ServiceName)
		}
		if s.ServiceName == hyperbahnService || s.ServiceName == meshdService {
			return nil, frame.Errorf(frame.ErrCodeBadRequest, "%q is meshd's own service and cannot be advertised", s.ServiceName)
		}
		names = append(names, s.ServiceName)
	}
	switch req.Method {
	case methodAdvertise:
		err = d.advertise(ctx, from, names, tokenOf(req.Arg2))
	case methodUnadvert:
		err = d.unadvertise(ctx, from, names)
	default:
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "no handler for service %q and method %q", hyperbahnService, req.Method)
	}
	if err != nil {
		return nil, err
	}
	out, _ := json.Marshal(adResponse{ConnectionCount: 1})
	return &conn.Response{Headers: req.Headers, Arg2: []byte("{}"), Arg3: out, Checksum: req.Checksum}, nil
}

// tokenOf reads the token from an advertise's JSON headers (arg2); any
// other form (tchannel-go's empty or null headers) carries none.
func tokenOf(arg2 []byte) string {
	var h map[string]string
	if json.Unmarshal(arg2, &h) != nil {
		return ""
	}
	return h[HeaderToken]
}

// advertise registers the app on from as an instance of each service, once
// the advertise rule lets it (rule.go). Advertising again (apps re-advertise
// every ~50s) renews nothing but is harmless: the instance ids are stable
// per connection.
func (d *Daemon) advertise(ctx context.Context, from *conn.Conn, services []string, token string) error {
	byToken, err := d.cfg.AdvertiseRule.check(from.NetConn(), services, token)
	if err != nil {
		d.advertRefused.Add(1)
		d.log.Warn("advertise refused", "services", services, "process", from.Peer().ProcessName, "peer", from.RemoteHostPort(), "err", err)
		return frame.Errorf(frame.ErrCodeBadRequest, "%v", err)
	}
	if !byToken {
		token = "" // registered with meshd's own token
	}
	return d.addInstances(ctx, from, services, token, byToken, nil)
}

// addInstances registers the app on from as an instance of each service
// (with meta besides the usual), its right to them already decided.
func (d *Daemon) addInstances(ctx context.Context, from *conn.Conn, services []string, token string, byToken bool, meta map[string]string) error {
	d.apps.mu.Lock()
	a := d.apps.byCon[from]
	if a == nil {
		d.apps.seq++
		a = &app{n: d.apps.seq, instances: make(map[string]discovery.Instance)}
		d.apps.byCon[from] = a
	}
	var added []discovery.Instance
	for _, s := range services {
		if _, ok := a.instances[s]; ok {
			continue
		}
		inst := discovery.Instance{
			Service: s,
			ID:      fmt.Sprintf("%s@%s#%d", s, d.cfg.Advertise, a.n),
			Addr:    d.cfg.Advertise,
			Token:   token,
			Meta: map[string]string{
				"process":   from.Peer().ProcessName,
				"host_port": from.Peer().HostPort,
				"node":      d.cfg.NodeName,
			},
		}
		if d.cfg.Zone != "" {
			inst.Meta[discovery.MetaZone] = d.cfg.Zone
		}
		maps.Copy(inst.Meta, meta)
		a.instances[s] = inst
		added = append(added, inst)
	}
	d.apps.mu.Unlock()
	for _, inst := range added {
		if err := d.registry.Register(ctx, inst); err != nil {
			d.apps.mu.Lock()
			delete(a.instances, inst.Service)
			d.apps.mu.Unlock()
			d.log.Warn("registering instance failed", "service", inst.Service, "instance", inst.ID, "err", err)
			if byToken && consul.IsPermissionDenied(err) {
				d.advertRefused.Add(1)
				return frame.Errorf(frame.ErrCodeBadRequest, "%v: consul says the token may not register %q: %v", errRefused, inst.Service, err)
			}
			return frame.Errorf(frame.ErrCodeUnexpected, "registering %s: %v", inst.Service, err)
		}
		d.relay.AddLocal(inst, from) // only now: a refused instance never gets a call
		d.log.Info("instance advertised", "service", inst.Service, "instance", inst.ID, "process", from.Peer().ProcessName)
	}
	if src, _ := from.Tag().(*relay.Source); len(services) > 0 {
		src.SetCaller(services[0]) // proven: the connection's calls carry this identity
	}
	return nil
}

// unadvertise withdraws the given services of the app on from; with no
// services named, all of them.
func (d *Daemon) unadvertise(ctx context.Context, from *conn.Conn, services []string) error {
	d.apps.mu.Lock()
	a := d.apps.byCon[from]
	var gone []discovery.Instance
	if a != nil {
		for s, inst := range a.instances {
			if len(services) == 0 || slices.Contains(services, s) {
				gone = append(gone, inst)
				delete(a.instances, s)
			}
		}
	}
	d.apps.mu.Unlock()
	for _, inst := range gone {
		d.relay.RemoveLocal(inst)
		if err := d.registry.Deregister(ctx, inst); err != nil {
			d.log.Warn("deregistering instance failed", "service", inst.Service, "instance", inst.ID, "err", err)
		}
		d.log.Info("instance withdrawn", "service", inst.Service, "instance", inst.ID)
	}
	return nil
}

// methodIdentify is meshd's call (service "meshd") in which an app that
// serves nothing, a caller only, proves the service it is, by the same rule
// as an advertise: {"service": NAME}, with its token in arg2's mesh-token.
const methodIdentify = "identify"

func (d *Daemon) handleIdentify(ctx context.Context, from *conn.Conn, req *conn.Request) (*conn.Response, error) {
	src, _ := from.Tag().(*relay.Source)
	if src == nil || src.Meshd {
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "identify on the host listener: apps identify to the meshd of their own host")
	}
	var q struct {
		Service string `json:"service"`
	}
	if err := json.Unmarshal(req.Arg3, &q); err != nil || q.Service == "" || len(q.Service) > 255 {
		return nil, frame.Errorf(frame.ErrCodeBadRequest, `identify wants {"service": NAME}`)
	}
	if err := d.prove(ctx, from.NetConn(), q.Service, tokenOf(req.Arg2), from.Peer().ProcessName); err != nil {
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "%v", err)
	}
	src.SetCaller(q.Service)
	body, _ := json.Marshal(map[string]string{"identity": src.Caller()})
	return &conn.Response{Headers: req.Headers, Arg2: []byte("{}"), Arg3: body}, nil
}

// prove checks that the app at the far end of nc is service, by its token
// or its Unix user (the advertise rule), for an app that calls without
// serving: its calls then carry that identity.
func (d *Daemon) prove(ctx context.Context, nc net.Conn, service, token, process string) error {
	byToken, err := d.cfg.AdvertiseRule.check(nc, []string{service}, token)
	if err == nil && byToken {
		if d.cfg.ProveToken == nil {
			err = fmt.Errorf("%w: no registry here can check a token", errRefused)
		} else if perr := d.cfg.ProveToken(ctx, service, token); perr != nil {
			err = fmt.Errorf("%w: consul says the token is not %q's: %v", errRefused, service, perr)
		}
	}
	if err != nil {
		d.identifyRefused.Add(1)
		lvl := slog.LevelDebug // no proof offered: the app's calls are anonymous, as it may well expect
		if token != "" {
			lvl = slog.LevelWarn // a token that does not prove the name: someone should look
		}
		d.log.Log(ctx, lvl, "identify refused", "service", service, "process", process, "peer", nc.RemoteAddr().String(), "err", err)
	}
	return err
}

// appGone withdraws everything a closed connection advertised.
func (d *Daemon) appGone(c *conn.Conn) {
	d.unadvertise(context.Background(), c, nil)
	d.apps.mu.Lock()
	delete(d.apps.byCon, c)
	d.apps.mu.Unlock()
}

// localInstances lists what local apps advertised.
func (d *Daemon) localInstances() []discovery.Instance {
	d.apps.mu.Lock()
	defer d.apps.mu.Unlock()
	var out []discovery.Instance
	for _, a := range d.apps.byCon {
		for _, inst := range a.instances {
			out = append(out, inst)
		}
	}
	slices.SortFunc(out, func(a, b discovery.Instance) int {
		if a.Service != b.Service {
			if a.Service < b.Service {
				return -1
			}
			return 1
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return out
}
