// Package outbox batches the frames many goroutines send on one connection
// into few system calls (Writer), and bounds what all of a process's
// connections may queue for peers that are not keeping up (Budget).
package outbox
