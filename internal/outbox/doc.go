// Package outbox batches the frames many goroutines send on one connection
// into few system calls (Writer), holds back the system calls of what read
// loops send until what they read is used up, so one read's calls leave in
// one write per peer (Batch), and bounds what all of a process's
// connections may queue for peers that are not keeping up (Budget). Its
// reads and writes of sockets are raw system calls (Socket), which never
// wake the runtime's monitor thread as syscall.Read and Write did.
package outbox
