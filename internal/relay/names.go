package relay

import "sync"

// names interns service names, so the call path turns the name bytes of a
// frame into a string without allocating once a service has been seen.
type names struct {
	mu sync.RWMutex
	m  map[string]string
}

func (n *names) intern(b []byte) string {
	n.mu.RLock()
	s, ok := n.m[string(b)]
	n.mu.RUnlock()
	if ok {
		return s
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = make(map[string]string)
	}
	if s, ok := n.m[string(b)]; ok {
		return s
	}
	if len(n.m) >= 100000 { // a flood of made-up names: stop remembering
		return string(b)
	}
	s = string(b)
	n.m[s] = s
	return s
}
