package follow

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/internal/backoff"
)

func TestNext(t *testing.T) {
	for _, c := range []struct{ prev, got, want uint64 }{
		{0, 42, 42},  // the first answer
		{42, 42, 42}, // the wait ended with nothing new
		{42, 50, 50}, // a change
		{50, 30, 0},  // backwards: start over
		{0, 0, 1},    // a zero index never makes the next query return at once
		{7, 0, 0},    // backwards to zero: start over (then the rule above)
	} {
		if got := Next(c.prev, c.got); got != c.want {
			t.Errorf("Next(%d, %d) = %d, want %d", c.prev, c.got, got, c.want)
		}
	}
}

// scripted is a Consul KV endpoint answering a scripted sequence of
// indexes (0: fail with 500), recording the index each query waited on; a
// query past the script hangs until the client goes away.
type scripted struct {
	mu     sync.Mutex
	script []uint64
	asked  []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.asked = append(s.asked, r.URL.Query().Get("index"))
	if len(s.script) == 0 {
		s.mu.Unlock()
		<-r.Context().Done()
		return
	}
	next := s.script[0]
	s.script = s.script[1:]
	s.mu.Unlock()
	if next == 0 {
		http.Error(w, "injected failure", http.StatusInternalServerError)
		return
	}
	w.Header().Set("X-Consul-Index", strconv.FormatUint(next, 10))
	w.Write([]byte(`[{"Key":"k","Value":"` + "dg==" + `"}]`))
}

func (s *scripted) waitedOn() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.asked)
}

func TestRunFollowsIndexRules(t *testing.T) {
	srv := &scripted{script: []uint64{10, 10, 12, 5, 0, 7}}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	client, err := api.NewClient(&api.Config{Address: hs.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var applied []uint64
	var failures int
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Wait: time.Minute, Failed: func(error) { failures++ }, Backoff: backoff.Backoff{Min: time.Millisecond, Max: time.Millisecond}},
			func(q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) { return client.KV().List("k", q) },
			func(_ api.KVPairs, m *api.QueryMeta) { applied = append(applied, m.LastIndex) })
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.waitedOn()) < 7 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	cancel() // the 7th query hangs in a wait of a minute
	<-done
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Run returned %v after its context ended, in the middle of a wait", took)
	}
	// 10 at once; 10 again (nothing new); 12; 5 went back: start over from 0
	// (the API client leaves index=0 out);
	// a failure: from 0 again; 7; then the hanging wait on 7.
	if want := []string{"", "10", "10", "12", "", "", "7"}; !slices.Equal(srv.waitedOn(), want) {
		t.Errorf("queries waited on %q, want %q", srv.waitedOn(), want)
	}
	if want := []uint64{10, 12, 5, 7}; !slices.Equal(applied, want) {
		t.Errorf("applied answers at %v, want %v (a wait with nothing new is not applied)", applied, want)
	}
	if failures != 1 {
		t.Errorf("Failed heard %d failures, want 1", failures)
	}
}

// A loop that fails on and on waits longer each time, up to the cap, and
// still ends when asked.
func TestRunBacksOff(t *testing.T) {
	var tries []time.Time
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Backoff: backoff.Backoff{Min: 10 * time.Millisecond, Max: 40 * time.Millisecond}},
			func(*api.QueryOptions) (int, *api.QueryMeta, error) {
				tries = append(tries, time.Now())
				if len(tries) == 6 {
					cancel()
				}
				return 0, nil, errors.New("consul is down")
			},
			func(int, *api.QueryMeta) { t.Error("applied a failed answer") })
	}()
	<-done
	if len(tries) != 6 {
		t.Fatalf("%d tries, want 6", len(tries))
	}
	gaps := make([]time.Duration, 0, 5)
	for i := 1; i < len(tries); i++ {
		gaps = append(gaps, tries[i].Sub(tries[i-1]))
	}
	// 10, 20, 40, 40, 40ms, each ±20% (and late, never early).
	for i, want := range []time.Duration{10, 20, 40, 40, 40} {
		want *= time.Millisecond
		if gaps[i] < want*8/10 {
			t.Errorf("wait %d was %v, want at least %v: %v", i, gaps[i], want*8/10, gaps)
		}
	}
}
