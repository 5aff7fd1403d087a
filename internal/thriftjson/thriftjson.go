package thriftjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"go.uber.org/thriftrw/compile"
	"go.uber.org/thriftrw/protocol/binary"
	"go.uber.org/thriftrw/wire"
)

// IDL is a compiled Thrift file, with what it includes.
type IDL struct{ m *compile.Module }

// Load compiles the Thrift file at path.
func Load(path string) (*IDL, error) {
	m, err := compile.Compile(path, compile.NonStrict())
	if err != nil {
		return nil, fmt.Errorf("thrift IDL: %w", err)
	}
	return &IDL{m: m}, nil
}

// Function is one method of a service in the IDL.
type Function struct {
	Service string
	spec    *compile.FunctionSpec
}

// Function finds "Service::method" (in the service or the ones it extends).
func (i *IDL) Function(name string) (*Function, error) {
	svcName, method, ok := strings.Cut(name, "::")
	if !ok {
		return nil, fmt.Errorf("thrift method %q: want Service::method", name)
	}
	svc := i.m.Services[svcName]
	if svc == nil {
		return nil, fmt.Errorf("thrift IDL %s has no service %q (it has %s)", i.m.ThriftPath, svcName, strings.Join(sortedKeys(i.m.Services), ", "))
	}
	for s := svc; s != nil; s = s.Parent {
		if f := s.Functions[method]; f != nil {
			return &Function{Service: svcName, spec: f}, nil
		}
	}
	return nil, fmt.Errorf("thrift service %s has no method %q (it has %s)", svcName, method, strings.Join(sortedKeys(svc.Functions), ", "))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// EncodeArgs encodes a JSON object of the method's arguments (by name) as
// the Thrift binary struct of arg3. Empty input means no arguments.
func (f *Function) EncodeArgs(js []byte) ([]byte, error) {
	if len(bytes.TrimSpace(js)) == 0 {
		js = []byte("{}")
	}
	v, err := decodeJSON(js)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("arguments of %s: want a JSON object of them by name", f.spec.Name)
	}
	return encodeStruct(compile.FieldGroup(f.spec.ArgsSpec), obj, f.spec.Name+" arguments")
}

// encodeStruct encodes obj as the struct of fields, in Thrift's binary protocol.
func encodeStruct(fields compile.FieldGroup, obj map[string]any, what string) ([]byte, error) {
	s, err := structToWire(fields, obj, what)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := binary.Default.Encode(wire.NewValueStruct(s), &b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// DecodeArgs is EncodeArgs backwards, for a handler.
func (f *Function) DecodeArgs(b []byte) ([]byte, error) {
	v, err := binary.Default.Decode(bytes.NewReader(b), wire.TStruct)
	if err != nil {
		return nil, fmt.Errorf("arguments of %s: %w", f.spec.Name, err)
	}
	obj, err := structFromWire(compile.FieldGroup(f.spec.ArgsSpec), v.GetStruct())
	if err != nil {
		return nil, err
	}
	return json.Marshal(obj)
}

// resultFields are the result struct's fields: success is field 0, then the
// declared exceptions.
func (f *Function) resultFields() compile.FieldGroup {
	var g compile.FieldGroup
	if rs := f.spec.ResultSpec; rs != nil {
		if rs.ReturnType != nil {
			g = append(g, &compile.FieldSpec{ID: 0, Name: "success", Type: rs.ReturnType})
		}
		g = append(g, rs.Exceptions...)
	}
	return g
}

// DecodeResult decodes an answer's result struct: the return value as JSON
// (null for void), or the declared exception that was raised, as JSON, with
// its field name in exception.
func (f *Function) DecodeResult(b []byte) (js []byte, exception string, err error) {
	v, err := binary.Default.Decode(bytes.NewReader(b), wire.TStruct)
	if err != nil {
		return nil, "", fmt.Errorf("result of %s: %w", f.spec.Name, err)
	}
	obj, err := structFromWire(f.resultFields(), v.GetStruct())
	if err != nil {
		return nil, "", err
	}
	for name, val := range obj {
		if name != "success" {
			js, err = json.Marshal(val)
			return js, name, err
		}
	}
	js, err = json.Marshal(obj["success"]) // null for void
	return js, "", err
}

// EncodeResult is the handler's side: the return value as JSON, or with
// exception set, that declared exception's JSON.
func (f *Function) EncodeResult(js []byte, exception string) ([]byte, error) {
	name := "success"
	if exception != "" {
		name = exception
	}
	obj := map[string]any{}
	if v, err := decodeJSON(js); err != nil {
		return nil, err
	} else if v != nil || exception != "" {
		obj[name] = v
	}
	return encodeStruct(f.resultFields(), obj, f.spec.Name+" result")
}

func decodeJSON(js []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	return v, nil
}
