package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/meshrpc/mesh/frame"
)

// CallJSON makes a call in the JSON arg scheme: in is marshalled as the body,
// the answer unmarshalled into out (which may be nil), and the answer's
// headers returned. A handler's error answer is an *ApplicationError.
func (c *Client) CallJSON(ctx context.Context, service, method string, headers map[string]string, in, out any, opts ...CallOption) (map[string]string, error) {
	arg3, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("%w the request body as JSON: %v", ErrEncoding, err)
	}
	res, err := c.call(ctx, "json", service, method, nil, headers, arg3, opts)
	if err != nil {
		return nil, err
	}
	resHeaders, err := decodeJSONHeaders(res.Arg2)
	if err != nil {
		return nil, err
	}
	if res.Code != frame.ResOK {
		ae := &ApplicationError{Headers: res.Arg2, Body: res.Arg3}
		var body struct{ Message string }
		if json.Unmarshal(res.Arg3, &body) == nil {
			ae.Message = body.Message
		}
		return resHeaders, ae
	}
	if out != nil && len(bytes.TrimSpace(res.Arg3)) > 0 {
		if err := json.Unmarshal(res.Arg3, out); err != nil {
			return resHeaders, fmt.Errorf("%w: %s::%s answered, but its %d-byte body does not decode into %T: %v", ErrEncoding, service, method, len(res.Arg3), out, err)
		}
	}
	return resHeaders, nil
}

func encodeJSONHeaders(h map[string]string, t frame.Tracing) ([]byte, error) {
	if t.TraceID != 0 {
		withTracing := make(map[string]string, len(h)+5)
		for k, v := range h {
			if !strings.HasPrefix(k, tracingPrefix) { // a handler passing on what it got
				withTracing[k] = v
			}
		}
		addTracingHeaders(withTracing, t)
		h = withTracing
	}
	if h == nil {
		return []byte("{}"), nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, Errorf(frame.ErrCodeBadRequest, "encoding headers: %v", err)
	}
	return b, nil
}

// decodeJSONHeaders accepts the three forms peers send for "no headers":
// nothing, null and {}; it drops tracing headers (the tracer's, not the
// application's).
func decodeJSONHeaders(b []byte) (map[string]string, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return map[string]string{}, nil
	}
	var h map[string]string
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, Errorf(frame.ErrCodeBadRequest, "JSON headers must be an object of strings: %v", err)
	}
	for k := range h {
		if strings.HasPrefix(k, tracingPrefix) {
			delete(h, k)
		}
	}
	return h, nil
}
