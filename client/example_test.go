package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"strings"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/testkit"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Dial connects to the local meshd (here a TChannel server on a port of its
// own); Call sends raw bytes and gets raw bytes back.
func ExampleDial() {
	addr := serve("echo", "upper", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte(strings.ToUpper(string(call.Body)))}, nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // the deadline is the call's TTL
	defer cancel()
	c, err := client.Dial(ctx, addr, client.Options{ServiceName: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	res, err := c.Call(ctx, "echo", "upper", nil, []byte("order-17"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(res.Body))
	// Output: ORDER-17
}

type query struct {
	ID int `json:"id"`
}

type order struct {
	ID    int    `json:"id"`
	Total string `json:"total"`
}

// CallJSON encodes the request and decodes the answer; a handler's error
// comes back as an *ApplicationError, a wire failure as an *Error.
func ExampleClient_CallJSON() {
	addr := serve("orders", "lookup", client.JSON(func(ctx context.Context, h map[string]string, q query) (order, error) {
		if q.ID != 17 {
			return order{}, fmt.Errorf("no order %d", q.ID)
		}
		return order{ID: 17, Total: "12.50 EUR"}, nil
	}))
	ctx := context.Background()
	c, err := client.Dial(ctx, addr, client.Options{ServiceName: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var out order
	if _, err := c.CallJSON(ctx, "orders", "lookup", nil, query{ID: 17}, &out); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%+v\n", out)
	_, err = c.CallJSON(ctx, "orders", "lookup", nil, query{ID: 18}, &out)
	var appErr *client.ApplicationError
	fmt.Println(errors.As(err, &appErr), appErr.Message)
	_, err = c.CallJSON(ctx, "orders", "nosuch", nil, query{}, &out)
	var wireErr *client.Error
	fmt.Println(errors.As(err, &wireErr), wireErr.Code)
	// Output:
	// {ID:17 Total:12.50 EUR}
	// true no order 18
	// true bad request
}

// A service registers JSON handlers and advertises them to its meshd, which
// then routes calls for it from any host. Callers reach it through their own
// meshd by name.
func ExampleServer_Advertise() {
	meshdAddr := localMeshd() // on a real host: the host's own meshd, 127.0.0.1:21300
	ctx := context.Background()
	srv := client.NewServer(client.Options{ServiceName: "orders"})
	srv.Register("orders", "lookup", client.JSON(func(ctx context.Context, h map[string]string, q query) (order, error) {
		return order{ID: q.ID, Total: "9.99 EUR"}, nil
	}))
	if err := srv.Advertise(ctx, meshdAddr); err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown(ctx)

	c, err := client.Dial(ctx, meshdAddr, client.Options{ServiceName: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var out order
	if _, err := c.CallJSON(ctx, "orders", "lookup", nil, query{ID: 3}, &out); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%+v\n", out)
	// Output: {ID:3 Total:9.99 EUR}
}

// DialPeers calls several peers directly, with no meshd: each call goes to
// the peer the Balancer picks, and a peer that is down is passed over.
func ExampleDialPeers() {
	up := serve("orders", "get", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte("order " + string(call.Body))}, nil
	}))
	down := closedPort()
	ctx := context.Background()
	c, err := client.DialPeers(ctx, []string{down, up}, client.Options{ServiceName: "billing", Logger: testkit.Quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		res, err := c.Call(ctx, "orders", "get", nil, []byte("17"))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(res.Body))
	}
	// Output:
	// order 17
	// order 17
	// order 17
}

// serve runs a server with one handler on a port of its own, for the
// examples.
func serve(service, method string, h client.Handler) string {
	srv := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
	srv.Register(service, method, h)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	return l.Addr().String()
}

// localMeshd starts a meshd with its embedded registry, for the examples.
func localMeshd() string {
	d, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", Registry: discovery.NewLocal(), Logger: testkit.Quiet})
	if err != nil {
		log.Fatal(err)
	}
	return d.Addr()
}

// closedPort is an address where nothing listens.
func closedPort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A service in the proto encoding (YARPC's "as: proto"): the handler takes
// and returns generated protobuf messages (here the well-known wrappers),
// and its procedure is "pkg.Service::Method", as gRPC's /pkg.Service/Method.
func ExampleClient_CallProto() {
	addr := serve("greeter", "demo.Greeter::Hello", client.Proto(func(ctx context.Context, h map[string]string, name *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return wrapperspb.String("hello, " + name.GetValue()), nil
	}))
	ctx := context.Background()
	c, err := client.Dial(ctx, addr, client.Options{ServiceName: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var greeting wrapperspb.StringValue
	if _, err := c.CallProto(ctx, "greeter", "demo.Greeter::Hello", nil, wrapperspb.String("ada"), &greeting); err != nil {
		log.Fatal(err)
	}
	fmt.Println(greeting.GetValue())
	// Output: hello, ada
}
