// Package outbox batches the frames many goroutines send on one connection
// into few system calls (Writer), holds back the system calls of what read
// loops send until what they read is used up, so one read's calls leave in
// one write per peer (Batch), and bounds what all of a process's
// connections may queue for peers that are not keeping up (Budget).
package outbox
