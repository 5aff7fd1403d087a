package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// 1,000 identical warnings from many loggers (with their own attributes)
// write the burst and count the rest; another message still gets through,
// and debug records are never limited.
func TestRepeatedMessagesAreCounted(t *testing.T) {
	var out bytes.Buffer
	h := New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log := slog.New(h)
	for i := range 1000 {
		log.With("peer", i).Warn("protocol error from peer, closing connection")
	}
	log.Warn("consul request failed")
	for range 20 {
		log.Debug("handshake failed")
	}
	lines := strings.Count(out.String(), "\n")
	if want := DefaultBurst + 1 + 20; lines != want || h.Suppressed() != 1000-DefaultBurst {
		t.Fatalf("%d lines written, %d suppressed; want %d and %d", lines, h.Suppressed(), want, 1000-DefaultBurst)
	}
}
