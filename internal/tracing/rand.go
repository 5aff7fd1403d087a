package tracing

import "math/rand/v2"

// nonZero is a random id; 0 means "none" in the frame's tracing field.
func nonZero() uint64 {
	for {
		if v := rand.Uint64(); v != 0 {
			return v
		}
	}
}
