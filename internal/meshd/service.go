package meshd

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
)

// handle serves the calls addressed to meshd itself.
func (d *Daemon) handle(ctx context.Context, req *conn.Request) (*conn.Response, error) {
	from := conn.FromContext(ctx)
	switch req.Service {
	case hyperbahnService:
		return d.handleHyperbahn(ctx, from, req)
	case meshdService:
		if req.Method == methodIdentify {
			return d.handleIdentify(ctx, from, req)
		}
		return d.handleMeshd(ctx, req)
	}
	return nil, frame.Errorf(frame.ErrCodeBadRequest, "meshd does not serve %q", req.Service)
}

// meshd's own service, for meshctl.
const meshdService = "meshd"

func (d *Daemon) handleMeshd(ctx context.Context, req *conn.Request) (*conn.Response, error) {
	var out any
	switch req.Method {
	case "status":
		out = d.Status(ctx)
	case "services":
		s, err := d.registry.Services(ctx)
		if err != nil {
			return nil, frame.Errorf(frame.ErrCodeUnexpected, "listing services: %v", err)
		}
		out = s
	case "instances":
		var q struct {
			Service string `json:"service"`
		}
		if err := json.Unmarshal(req.Arg3, &q); err != nil || q.Service == "" {
			return nil, frame.Errorf(frame.ErrCodeBadRequest, `instances wants {"service": NAME}`)
		}
		insts, err := d.registry.Instances(ctx, q.Service)
		if err != nil && !errors.Is(err, discovery.ErrNoInstances) {
			return nil, frame.Errorf(frame.ErrCodeUnexpected, "looking up %s: %v", q.Service, err)
		}
		out = insts
	case "stat", "top", "tail":
		r, err := d.handleOps(ctx, req.Method, req.Arg3)
		if err != nil {
			return nil, err
		}
		out = r
	case methodReport:
		r, err := d.handleReport(ctx, req.Arg3)
		if err != nil {
			return nil, err
		}
		out = r
	case "explain":
		var q struct {
			SpanID string `json:"span_id"`
		}
		var span uint64
		err := json.Unmarshal(req.Arg3, &q)
		if err == nil {
			span, err = strconv.ParseUint(q.SpanID, 16, 64)
		}
		if err != nil || span == 0 {
			return nil, frame.Errorf(frame.ErrCodeBadRequest, `explain wants {"span_id": HEX}`)
		}
		out = d.relay.Recent("", span, 1)
	default:
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "no handler for service %q and method %q", meshdService, req.Method)
	}
	body, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	return &conn.Response{Headers: req.Headers, Arg2: []byte("{}"), Arg3: body}, nil
}
