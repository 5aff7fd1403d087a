package client

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/backoff"
	"github.com/meshrpc/mesh/internal/conn"
)

// Re-advertise period, as Hyperbahn clients use (jittered).
const readvertiseEvery = 50 * time.Second

// reconnect is the backoff of reaching meshd again (and of Options.Wait).
func reconnect() backoff.Backoff {
	return backoff.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
}

// Advertise connects to the meshd at addr, serves this server's handlers over
// that connection, and advertises every registered service there (the
// Hyperbahn "ad" call, so meshd routes calls for them to this process). It
// returns once the first advertise succeeded; from then on the server keeps
// the registration alive, re-advertising periodically and reconnecting with
// backoff (then advertising again) until Shutdown. The process needs no
// listener of its own.
//
// With Options.Wait it keeps trying to reach meshd until ctx ends.
func (s *Server) Advertise(ctx context.Context, addr string) error {
	if len(s.Services()) == 0 {
		return ErrNothingToAdvertise
	}
	c, err := retrying(ctx, s.opts.Wait, func() (*conn.Conn, error) { return s.advertiseOnce(ctx, addr) })
	if err != nil {
		return err
	}
	go s.keepAdvertised(addr, c)
	return nil
}

func (s *Server) advertiseOnce(ctx context.Context, addr string) (*conn.Conn, error) {
	opts := s.opts.connOptions("", s.handle)
	opts.OnClose = s.untrack
	c, err := conn.Dial(ctx, addr, opts)
	if err != nil {
		return nil, err
	}
	if !s.track(c) {
		c.Close()
		return nil, ErrServerClosed
	}
	if !s.withdrawn.Load() {
		if err := s.adCall(ctx, c, "ad"); err != nil {
			c.Close()
			return nil, err
		}
	}
	s.mu.Lock()
	s.advertised[c] = struct{}{}
	s.mu.Unlock()
	return c, nil
}

// adCall sends an advertise ("ad") or unadvertise ("unad") for every
// registered service.
func (s *Server) adCall(ctx context.Context, c *conn.Conn, method string) error {
	type svc struct {
		ServiceName string `json:"serviceName"`
		Cost        int    `json:"cost"`
	}
	var body struct {
		Services []svc `json:"services"`
	}
	for _, name := range s.Services() {
		body.Services = append(body.Services, svc{ServiceName: name})
	}
	arg3, _ := json.Marshal(body)
	caller := s.opts.ServiceName
	if caller == "" && len(body.Services) > 0 {
		caller = body.Services[0].ServiceName
	}
	h := frame.AppendHeader(nil, frame.HeaderArgScheme, "json")
	h = frame.AppendHeader(h, frame.HeaderCallerName, caller)
	h = frame.AppendHeader(h, frame.HeaderRetryFlags, "c")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := c.Call(ctx, &conn.Request{Service: "hyperbahn", Method: method, Headers: h, Arg2: tokenHeaders(s.opts.Token), Arg3: arg3, Checksum: s.opts.Checksum})
	if err != nil {
		return err
	}
	if res.Code != frame.ResOK {
		return &ApplicationError{Headers: res.Arg2, Body: res.Arg3, Message: "advertise refused: " + string(res.Arg3)}
	}
	return nil
}

func (s *Server) keepAdvertised(addr string, c *conn.Conn) {
	bo := reconnect()
	for {
		timer := time.NewTimer(backoff.Jitter(readvertiseEvery))
		select {
		case <-s.done:
			timer.Stop()
			return
		case <-timer.C:
			if s.withdrawn.Load() {
				continue
			}
			if err := s.adCall(context.Background(), c, "ad"); err != nil {
				s.opts.Logger.Warn("re-advertise failed", "meshd", addr, "err", err)
			}
			continue
		case <-c.Done():
			timer.Stop()
		}
		// The connection to meshd is gone: reconnect and advertise again.
		for {
			if !bo.Wait(s.done) {
				return
			}
			next, err := s.advertiseOnce(context.Background(), addr)
			if err == nil {
				s.opts.Logger.Info("re-advertised after reconnect", "meshd", addr)
				c = next
				bo.Reset()
				break
			}
			if err == ErrServerClosed {
				return
			}
			s.opts.Logger.Debug("reconnect to meshd failed", "meshd", addr, "err", err)
		}
	}
}

// Withdraw takes this server out of rotation on every meshd it advertised
// to (an unadvertise), while it goes on serving calls already routed to it.
// Rejoin puts it back, under the same instance ids, so shard keys return.
func (s *Server) Withdraw(ctx context.Context) error {
	s.withdrawn.Store(true)
	return s.adAll(ctx, "unad")
}

// Rejoin advertises again after Withdraw.
func (s *Server) Rejoin(ctx context.Context) error {
	s.withdrawn.Store(false)
	return s.adAll(ctx, "ad")
}

func (s *Server) adAll(ctx context.Context, method string) error {
	s.mu.RLock()
	conns := make([]*conn.Conn, 0, len(s.advertised))
	for c := range s.advertised {
		conns = append(conns, c)
	}
	s.mu.RUnlock()
	var errs []error
	for _, c := range conns {
		errs = append(errs, s.adCall(ctx, c, method))
	}
	return errors.Join(errs...)
}
