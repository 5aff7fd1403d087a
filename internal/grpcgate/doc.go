// Package grpcgate lets stock gRPC programs, which carry no mesh code, call
// and serve in the mesh: it translates between gRPC's unary calls and
// TChannel calls in the proto encoding (YARPC's convention: the path
// /pkg.Service/Method is the procedure pkg.Service::Method, metadata is
// arg2, the message is arg3).
//
// The gateway meets the relay the way every app does, over a TChannel
// connection: for each gRPC connection (and identity it proves) it opens an
// in-memory TChannel connection into meshd, so a gRPC call passes every
// stage a TChannel call passes (intentions on the proven identity, limits,
// balancing, retries, breakers, explanations, spans). A gRPC server named in
// meshd's config is the same in reverse: an in-memory connection on which
// meshd delivers calls, which a Backend makes to the server over HTTP/2.
//
// Both HTTP/2 sides are the package's own, for unary calls only: h2conn
// serves a gRPC client, upstream calls a gRPC server; window holds the
// flow control they share. grpc-go's server and client, used at first,
// cost more CPU per call than the relay's whole hop.
package grpcgate
