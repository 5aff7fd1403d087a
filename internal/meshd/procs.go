package meshd

import "runtime"

// UseProcs sets how many CPUs meshd's process runs Go code on at once
// (runtime.GOMAXPROCS) and returns it: o.Procs, or, given 0, half of the
// CPUs the runtime found it may use (affinity and cgroup quota counted),
// at least one. GOMAXPROCS in the environment wins over that default, as
// it does over the runtime's. Only cmd/meshd calls it: the meshds a test
// starts share the test's process.
//
// Why half: a relay mostly waits on sockets. With a processor per CPU,
// each goroutine a read made runnable woke a thread for an idle
// processor, which mostly found the work done already (futex, epoll and
// the runtime's monitor thread), and meshd shares its host with the apps
// it serves. On the 2-CPU bench machine one processor cut meshd's CPU per
// call by 15-19% at 32 callers, gRPC and TChannel alike, for as many calls
// per second or more (docs/PERFORMANCE.md).
func UseProcs(o Options, getenv func(string) string) int {
	switch {
	case o.Procs > 0:
		runtime.GOMAXPROCS(o.Procs)
	case getenv("GOMAXPROCS") == "":
		runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)/2))
	}
	return runtime.GOMAXPROCS(0)
}
