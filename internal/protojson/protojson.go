package protojson

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// IDL is a compiled .proto file (with its imports).
type IDL struct {
	path    string
	methods map[string]protoreflect.MethodDescriptor // by "pkg.Service::Method"
}

// Load compiles the .proto file at path; its imports are looked up beside
// it, and the well-known types (google/protobuf/*.proto) are built in.
func Load(path string) (*IDL, error) {
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
		ImportPaths: []string{filepath.Dir(path)},
	})}
	files, err := c.Compile(context.Background(), filepath.Base(path))
	if err != nil {
		return nil, err
	}
	idl := &IDL{path: path, methods: map[string]protoreflect.MethodDescriptor{}}
	for _, f := range files {
		services := f.Services()
		for i := range services.Len() {
			s := services.Get(i)
			methods := s.Methods()
			for j := range methods.Len() {
				m := methods.Get(j)
				idl.methods[Procedure(s.FullName(), m.Name())] = m
			}
		}
	}
	return idl, nil
}

// Procedure is a method's name in the proto encoding over TChannel:
// "pkg.Service::Method" (gRPC's path /pkg.Service/Method).
func Procedure(service protoreflect.FullName, method protoreflect.Name) string {
	return string(service) + "::" + string(method)
}

// Method is one RPC of the IDL.
type Method struct {
	desc protoreflect.MethodDescriptor
}

// Procedure is the method's name on the wire: "pkg.Service::Method".
func (m *Method) Procedure() string { return Procedure(m.desc.Parent().FullName(), m.desc.Name()) }

// Method finds "pkg.Service::Method" (or gRPC's "/pkg.Service/Method").
func (i *IDL) Method(name string) (*Method, error) {
	if p, ok := strings.CutPrefix(name, "/"); ok {
		name = strings.Replace(p, "/", "::", 1)
	}
	m, ok := i.methods[name]
	if !ok {
		var known []string
		for k := range i.methods {
			known = append(known, k)
		}
		slices.Sort(known)
		return nil, fmt.Errorf("no method %q in %s (it has %s)", name, i.path, strings.Join(known, ", "))
	}
	if m.IsStreamingClient() || m.IsStreamingServer() {
		return nil, fmt.Errorf("%s streams: only unary methods are called this way", name)
	}
	return &Method{desc: m}, nil
}

// Request is the request message js (a JSON object, proto3's JSON
// mapping), for client.Client.CallProto.
func (m *Method) Request(js []byte) (proto.Message, error) { return message(m.desc.Input(), js) }

// NewResponse is an empty response message to decode an answer into.
func (m *Method) NewResponse() proto.Message { return dynamicpb.NewMessage(m.desc.Output()) }

// JSON is msg in proto3's JSON mapping, every field shown.
func JSON(msg proto.Message) ([]byte, error) {
	return protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(msg)
}

// EncodeRequest is the request message js (a JSON object, proto3's JSON
// mapping) in protobuf's binary encoding.
func (m *Method) EncodeRequest(js []byte) ([]byte, error) { return encode(m.desc.Input(), js) }

// DecodeRequest is a request in protobuf's binary encoding as JSON.
func (m *Method) DecodeRequest(b []byte) ([]byte, error) { return decode(m.desc.Input(), b) }

// EncodeResponse is the response message js in protobuf's binary encoding.
func (m *Method) EncodeResponse(js []byte) ([]byte, error) { return encode(m.desc.Output(), js) }

// DecodeResponse is a response in protobuf's binary encoding as JSON.
func (m *Method) DecodeResponse(b []byte) ([]byte, error) { return decode(m.desc.Output(), b) }

func message(d protoreflect.MessageDescriptor, js []byte) (proto.Message, error) {
	msg := dynamicpb.NewMessage(d)
	if len(js) > 0 {
		if err := protojson.Unmarshal(js, msg); err != nil {
			return nil, fmt.Errorf("%s: %v", d.FullName(), err)
		}
	}
	return msg, nil
}

func encode(d protoreflect.MessageDescriptor, js []byte) ([]byte, error) {
	msg, err := message(d, js)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(msg)
}

func decode(d protoreflect.MessageDescriptor, b []byte) ([]byte, error) {
	msg := dynamicpb.NewMessage(d)
	if err := proto.Unmarshal(b, msg); err != nil {
		return nil, fmt.Errorf("%s: %v", d.FullName(), err)
	}
	return JSON(msg)
}
