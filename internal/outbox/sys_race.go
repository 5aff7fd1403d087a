//go:build race

package outbox

import "syscall"

// With the race detector, reads and writes go through syscall's own: they
// tell the detector that what one goroutine did before writing to a
// socket happened before what another does after reading it (a handler's
// writes, seen by the caller its answer reached), which RawSyscall does
// not, so every test of a call would report a race that is not one.

func sysRead(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), err
}

func sysWrite(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Write(int(fd), p)
	return max(n, 0), err
}
