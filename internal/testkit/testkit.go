package testkit

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// Quiet is a logger that writes nowhere.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// WaitFor polls cond until it holds and returns how long that took; past
// limit it fails the test, saying what did not happen.
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(begin)
}
