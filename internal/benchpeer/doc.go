// Command benchpeer is the programs of the cross-process hop benchmark
// (integration's BenchmarkHopProcesses, make bench) that mesh itself does
// not ship: an SDK echo server on a port of its own, and tchannel-go's echo
// server, relay and load driver, so that tchannel-go is measured as mesh is,
// process for process. It is no part of the product.
//
//	benchpeer mesh-server LISTEN          the SDK serving echo::echo on LISTEN
//	benchpeer tchannel-server LISTEN      tchannel-go serving echo::echo (raw)
//	benchpeer tchannel-relay LISTEN PEER  tchannel-go's relay, forwarding echo to PEER
//	benchpeer tchannel-bench ADDR C DUR WARMUP
//	                                      C tchannel-go callers of echo::echo at ADDR
//	                                      for DUR after WARMUP, 1 KiB each; the
//	                                      result as loadgen's JSON on stdout
//	benchpeer grpc-bench ADDR C DUR WARMUP
//	                                      C callers of test.Words/Echo (service words)
//	                                      on one stock gRPC client connection, 1 KiB
package main
