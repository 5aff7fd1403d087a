// Package heapfloor makes a process whose live heap is small collect
// garbage less often: it raises the GC percent after each collection so
// that the next one starts no sooner than the heap reaches a floor (or,
// once the live heap is larger, at the runtime's own GC percent). meshd's
// live heap is a few MiB while it allocates per call, so the runtime's
// default (collect when the heap doubles) ran a collection many times a
// second and cost a third of a gRPC hop's CPU; the floor trades a bounded
// amount of memory for it. The GC percent in force is the runtime's own
// metric (go_gc_gogc_percent on /metrics).
package heapfloor
