//go:build !race

package outbox

import (
	"syscall"
	"unsafe"
)

// sysRead and sysWrite are read(2) and write(2) on a socket that never
// blocks (Go's sockets are non-blocking: a full or empty one answers
// EAGAIN at once), made without telling the scheduler (RawSyscall): the
// scheduler's part of syscall.Read, for a call that may block, cost more
// than the call here, and woke the runtime's monitor thread from its sleep
// whenever the process had been idle a moment (a futex, then a nanosleep
// loop). p must not be empty. Race builds use syscall's own (sys_race.go).

func sysRead(fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return result(n, e)
}

func sysWrite(fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return result(n, e)
}

func result(n uintptr, e syscall.Errno) (int, error) {
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
