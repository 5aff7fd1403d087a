package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"
)

// A proto handler and CallProto: messages in protobuf's binary encoding,
// headers both ways, an application error with its message, a request
// that does not decode refused as a bad request.
func TestProtoEncoding(t *testing.T) {
	addr := serve("echo", "mesh.Echo::Upper", client.Proto(func(ctx context.Context, h map[string]string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if in.GetValue() == "" {
			return nil, errors.New("nothing to upper-case")
		}
		return wrapperspb.String(strings.ToUpper(in.GetValue()) + h["suffix"]), nil
	}))
	c, err := client.Dial(context.Background(), addr, client.Options{Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out wrapperspb.StringValue
	if _, err := c.CallProto(context.Background(), "echo", "mesh.Echo::Upper", map[string]string{"suffix": "!"}, wrapperspb.String("hi"), &out); err != nil || out.GetValue() != "HI!" {
		t.Fatalf("Upper(hi): %q, %v", out.GetValue(), err)
	}
	var app *client.ApplicationError
	if _, err := c.CallProto(context.Background(), "echo", "mesh.Echo::Upper", nil, wrapperspb.String(""), &out); !errors.As(err, &app) || app.Message != "nothing to upper-case" {
		t.Fatalf("an application error: %v", err)
	}
	res, err := c.Call(context.Background(), "echo", "mesh.Echo::Upper", nil, []byte{0xff, 0xff}) // as: raw, which the proto handler reads as it comes
	if frame.CodeOf(err) != frame.ErrCodeBadRequest {
		t.Fatalf("a request that does not decode: %v %v", res, err)
	}
}
