package trust

import (
	"fmt"
	"log/slog"
	"os"
	"time"
)

// FilesPoll is how often FromFiles looks for changed files.
var FilesPoll = time.Second

// FromFiles loads a certificate chain, its key and a CA bundle from PEM
// files, and loads them again whenever one changes (a rotation by whatever
// writes them: cert-manager, Vault agent, a cron job). A change that does not
// load (a half-written file, a key of another certificate) keeps the bundle
// in force and is shown in Status until a good one comes.
func FromFiles(certFile, keyFile, caFile string, log *slog.Logger) (*Store, error) {
	s := newStore("files", log)
	files := []string{certFile, keyFile, caFile}
	load := func() (*Bundle, error) {
		var pems [3][]byte
		for i, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			pems[i] = b
		}
		b, err := NewBundle(pems[0], pems[1], pems[2])
		if err != nil {
			return nil, fmt.Errorf("%s, %s, %s: %w", certFile, keyFile, caFile, err)
		}
		return b, nil
	}
	b, err := load()
	if err != nil {
		return nil, err
	}
	s.Set(b)
	seen := stamps(files)
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(FilesPoll)
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
			}
			now := stamps(files)
			if now == seen {
				continue
			}
			b, err := load()
			if err != nil {
				s.setErr(err)
				s.log.Warn("new identity files do not load; the old ones stay in force", "err", err)
				continue // tried again at the next change
			}
			seen = now
			s.Set(b)
		}
	}()
	return s, nil
}

// stamps is what tells a changed file: size and modification time of each.
func stamps(files []string) (out [3]string) {
	for i, f := range files {
		if fi, err := os.Stat(f); err == nil {
			out[i] = fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return out
}
