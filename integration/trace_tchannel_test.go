//go:build integration

package integration

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/opentracing/opentracing-go/mocktracer"
	"github.com/uber/tchannel-go"
	"github.com/uber/tchannel-go/hyperbahn"
	"github.com/uber/tchannel-go/raw"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/testkit"
)

// zipkinTracer is an OpenTracing tracer that tchannel-go can put into and
// read from the frame's tracing field ("zipkin-span-format"), which a
// tchannel-go peer needs to join a trace (its default tracer cannot).
func zipkinTracer() *mocktracer.MockTracer {
	mt := mocktracer.New()
	mt.RegisterInjector("zipkin-span-format", zipkinInjector{})
	mt.RegisterExtractor("zipkin-span-format", zipkinExtractor{})
	return mt
}

type zipkinInjector struct{}

func (zipkinInjector) Inject(sc mocktracer.MockSpanContext, carrier any) error {
	c, ok := carrier.(interface {
		SetTraceID(uint64)
		SetSpanID(uint64)
		SetFlags(byte)
	})
	if !ok {
		return opentracing.ErrInvalidCarrier
	}
	c.SetTraceID(uint64(sc.TraceID))
	c.SetSpanID(uint64(sc.SpanID))
	if sc.Sampled {
		c.SetFlags(1)
	}
	return nil
}

type zipkinExtractor struct{}

func (zipkinExtractor) Extract(carrier any) (mocktracer.MockSpanContext, error) {
	c, ok := carrier.(interface {
		TraceID() uint64
		SpanID() uint64
		Flags() byte
	})
	if !ok {
		return mocktracer.MockSpanContext{}, opentracing.ErrInvalidCarrier
	}
	if c.TraceID() == 0 {
		return mocktracer.MockSpanContext{}, opentracing.ErrSpanContextNotFound
	}
	return mocktracer.MockSpanContext{TraceID: int(c.TraceID()), SpanID: int(c.SpanID()), Sampled: c.Flags()&1 == 1}, nil
}

type tgoLeaf struct{}

func (tgoLeaf) Handle(ctx context.Context, args *raw.Args) (*raw.Res, error) {
	return &raw.Res{Arg3: append([]byte("tgo-leaf:"), args.Arg3...)}, nil
}
func (tgoLeaf) OnError(context.Context, error) {}

// A tchannel-go client calls s1 through meshd; s1 calls a tchannel-go
// server s2 through meshd: one trace, started by the tchannel-go client and
// continued by the tchannel-go server.
func TestTChannelGoPeersJoinTheTrace(t *testing.T) {
	startJaeger(t)
	a := startHost(t, "127.0.0.1", "off", "--zipkin", zipkinURL)

	serverTracer := zipkinTracer()
	s2, err := tchannel.NewChannel("tgo-s2", &tchannel.ChannelOptions{Logger: tchannel.NullLogger, Tracer: serverTracer})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	s2.Register(raw.Wrap(tgoLeaf{}), "leaf")
	if err := s2.ListenAndServe("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	hc, err := hyperbahn.NewClient(s2, hyperbahn.Configuration{InitialNodes: []string{a.addr}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if err := hc.Advertise(); err != nil {
		t.Fatal(err)
	}

	s1Out, err := client.Dial(context.Background(), a.addr, client.Options{ServiceName: "s1", Zipkin: zipkinURL, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s1Out.Close()
	s1 := client.NewServer(client.Options{ServiceName: "s1", Zipkin: zipkinURL, Logger: testkit.Quiet})
	s1.Register("s1", "front", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		res, err := s1Out.Call(ctx, "tgo-s2", "leaf", nil, call.Body)
		if err != nil {
			return nil, err
		}
		return &client.Response{Body: res.Body}, nil
	}))
	if err := s1.Advertise(context.Background(), a.addr); err != nil {
		t.Fatal(err)
	}
	defer s1.Shutdown(context.Background())
	testkit.WaitFor(t, 5*time.Second, "s1 and tgo-s2 visible", func() bool { return seesServices(t, a, "s1", "tgo-s2") })

	clientTracer := zipkinTracer()
	caller, err := tchannel.NewChannel("tgo-caller", &tchannel.ChannelOptions{Logger: tchannel.NullLogger, Tracer: clientTracer})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, arg3, _, err := raw.Call(ctx, caller, a.addr, "s1", "front", nil, []byte("x"))
	cancel()
	if err != nil || string(arg3) != "tgo-leaf:x" {
		t.Fatalf("call: %q %v", arg3, err)
	}
	started := clientTracer.FinishedSpans()
	if len(started) != 1 {
		t.Fatalf("the tchannel-go client recorded %d spans", len(started))
	}
	traceID := fmt.Sprintf("%016x", started[0].SpanContext.TraceID)

	want := []string{"meshd", "s1", "s1", "meshd"}
	var spans []jaegerSpan
	var svc map[string]string
	testkit.WaitFor(t, 15*time.Second, "the mesh's spans in jaeger", func() bool {
		spans, svc = fetchTrace(t, traceID)
		return len(spans) >= len(want)
	})
	var lastHop jaegerSpan
	for _, s := range spans {
		if svc[s.SpanID] == "meshd" && s.OperationName == "leaf" {
			lastHop = s
		}
	}
	if len(spans) != len(want) || lastHop.SpanID == "" {
		t.Fatalf("trace %s has %d spans (want %d) with the hop to tgo-s2: %v", traceID, len(spans), len(want), lastHop.SpanID != "")
	}
	// The tchannel-go server continued the same trace, under meshd's hop span.
	var joined bool
	for _, s := range serverTracer.FinishedSpans() {
		hop, _ := strconv.ParseUint(lastHop.SpanID, 16, 64)
		if uint64(s.SpanContext.TraceID) == uint64(started[0].SpanContext.TraceID) && uint64(s.ParentID) == hop {
			joined = true
		}
	}
	if !joined {
		t.Fatalf("the tchannel-go server's spans %+v did not continue trace %s under meshd span %s", serverTracer.FinishedSpans(), traceID, lastHop.SpanID)
	}
	t.Logf("trace %s: tchannel-go client → meshd → s1 → meshd → tchannel-go server, one trace", traceID)
}
