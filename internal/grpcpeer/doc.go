// Command grpcpeer is a stock gRPC program for mesh's integration tests:
// built from google.golang.org/grpc alone, with no mesh code, so the tests
// show what a gRPC program that knows nothing of the mesh sees. Its service,
// test.Words, is words.proto (Text is wire-compatible with
// google.protobuf.StringValue).
//
//	grpcpeer server LISTEN NAME     serve test.Words and grpc.health.v1 on LISTEN;
//	                                SIGUSR1 makes the health check fail, SIGUSR2 pass
//	grpcpeer call ADDR VALUE [KEY=VALUE...] [timeout=D]
//	                                call test.Words/Echo at ADDR with that metadata;
//	                                print the answer, its metadata and status as JSON
//
// Echo answers as package words says.
package main
