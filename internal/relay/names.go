package relay

import "sync"

// names interns the names calls carry (services, methods, callers), so the
// call path turns a frame's name bytes into a string without allocating once
// the name has been seen. Only names of calls that were routed are kept, and
// only short ones, up to maxNames: made-up names (a caller trying a million
// services or methods) cost one allocation each and leave nothing behind.
type names struct {
	mu sync.RWMutex
	m  map[string]string
}

// Bounds of the names kept.
const (
	maxNames   = 10000
	maxNameLen = 128
)

// get returns b as a string: the kept one if b was seen (known), else a
// new one.
func (n *names) get(b []byte) (s string, known bool) {
	n.mu.RLock()
	s, known = n.m[string(b)]
	n.mu.RUnlock()
	if !known {
		s = string(b)
	}
	return s, known
}

// has reports whether s was kept.
func (n *names) has(s string) bool {
	n.mu.RLock()
	_, ok := n.m[s]
	n.mu.RUnlock()
	return ok
}

// intern returns b as a string and keeps it for later calls, within the
// bounds.
func (n *names) intern(b []byte) string {
	s, known := n.get(b)
	if !known {
		n.keep(s)
	}
	return s
}

// keep remembers s, within the bounds.
func (n *names) keep(s string) {
	if len(s) > maxNameLen {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = make(map[string]string)
	}
	if _, ok := n.m[s]; !ok && len(n.m) < maxNames {
		n.m[s] = s
	}
}
