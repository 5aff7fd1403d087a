// Package protojson turns JSON into protobuf and back with a .proto file
// read at run time (github.com/bufbuild/protocompile): meshctl call --proto
// takes a method's request as JSON and prints its response as JSON, for
// calls in the proto encoding ("as: proto", YARPC's; the method named
// "pkg.Service::Method").
package protojson
