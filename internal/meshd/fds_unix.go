//go:build unix

package meshd

import "syscall"

// openFiles is the process's limit on open files (0: unknown).
func openFiles() int {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil || l.Cur > 1<<30 {
		return 0
	}
	return int(l.Cur)
}
