package routing

import (
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
)

// Call is one call as the stages see it. Reset fills the request's side;
// stages fill the rest. A Call is kept for the call's retries: Tried grows,
// and the stages run again.
type Call struct {
	// Service is the name the call is routed on: RoutingName of the call.
	Service string
	// Headers are the call's transport headers (ShardKey reads them);
	// they and AppHeaders alias the caller's buffer (see SetHeaders).
	Headers frame.Headers
	// Caller is who calls: the identity meshd's relay proved for the
	// connection (or another meshd vouched for), which it sets after Reset;
	// in the SDK's direct mode, this process's own name ("cn").
	Caller []byte
	// AppHeaders is the request's arg2 (application headers, in the scheme
	// its "as" header names), when the first frame holds all of it: L7
	// intentions match on them.
	AppHeaders []byte
	// Method is the call's arg1, when the caller of Reset knows it (the
	// relay sets it, interned; direct mode too): L7 intentions decide on it.
	Method string
	// Tried lists the instances this call was already sent to: they are
	// not picked again.
	Tried []string

	// Instances are the service's healthy instances (Discover).
	Instances []discovery.Instance
	// Conn is the connection the picked instance is reached on (Connect).
	Conn *conn.Conn
	// Wait is closed when the stage that answered ErrWait can go on.
	Wait <-chan struct{}

	// Picked is the index in Instances of the chosen one (Balancer); it
	// shares a word with re and at.
	Picked      int32
	re          retryFlags
	at          uint8   // the stage a Pipeline runs (on) from
	limits      *limits // the service's, looked up once per call
	admitted    *limits // the local-delivery limits this call holds a place in
	eps         []*endpoint
	epsBuf      [8]*endpoint // services with more instances allocate theirs
	unreachable bitset       // instances found unreachable during this pick
	skip        bitset       // unreachable or tried, for one pick
	choice      Choice
	unreachBuf  [1]uint64
	skipBuf     [1]uint64
	tryBuf      [3]string // the default max_attempts
	start       int64     // when Reset ran: nanoseconds after epoch (monotonic)
}

// epoch is the base of Call.start: a monotonic clock reading that fits a
// word, where a time.Time takes three.
var epoch = time.Now()

// Now is when the call's routing began (Reset).
func (c *Call) Now() time.Time { return epoch.Add(time.Duration(c.start)) }

// Took is the time since the call's routing began.
func (c *Call) Took() time.Duration { return time.Since(epoch) - time.Duration(c.start) }

// Reset readies c for a new call to service with transport headers h,
// keeping its buffers.
func (c *Call) Reset(service string, h frame.Headers) {
	*c = Call{Service: service, start: int64(time.Since(epoch)), Picked: -1}
	c.Tried = c.tryBuf[:0]
	c.unreachable = c.unreachBuf[:0]
	c.skip = c.skipBuf[:0]
	c.SetHeaders(h)
}

// SetHeaders points c at the transport headers h, as Reset does. A relay
// that retries a call from its saved frames calls it again, since the
// frame the headers first came in is gone by then.
func (c *Call) SetHeaders(h frame.Headers) {
	c.Headers = h
	c.Caller, _ = h.Get(frame.HeaderCallerName)
	re, _ := h.Get(frame.HeaderRetryFlags)
	c.re = parseRetryValue(re)
}

// ShardKey is the call's "sk" header, nil when absent (an empty one is
// still a shard key: not nil).
func (c *Call) ShardKey() []byte {
	key, sharded := c.Headers.Get(frame.HeaderShardKey)
	if sharded && key == nil {
		key = []byte{}
	}
	return key
}

// Instance is the picked instance.
func (c *Call) Instance() discovery.Instance { return c.Instances[c.Picked] }

// Exclude takes the picked instance out of this pick (it was unreachable),
// so the Balancer can pick again.
func (c *Call) Exclude() {
	c.unreachable.set(int(c.Picked))
	c.choice.unreachable = count16(int(c.choice.unreachable) + 1)
}

// Choice is why the Balancer picked the instance it did.
func (c *Call) Choice() Choice { return c.choice }

// Release gives back the place an admitted call held in its service's
// local limits (Admission); it is safe to call more than once.
func (c *Call) Release() {
	if c.admitted != nil {
		c.admitted.release()
		c.admitted = nil
	}
}

func (c *Call) lim(b *Balancer) *limits {
	if c.limits == nil {
		c.limits = b.policies.limits(c.Service)
	}
	return c.limits
}

// RoutingName is the name a call is routed on: its routing key ("rk"),
// when it has one, else its service. As in tchannel-go's relay, the call
// itself is unchanged: it reaches an instance of the routing key's service
// still naming its own service (a proxy, say, that serves others' names).
func RoutingName(service []byte, h frame.Headers) []byte {
	if rk, ok := h.Get(frame.HeaderRoutingKey); ok && len(rk) > 0 {
		return rk
	}
	return service
}

// bitset marks instances by their index in Call.Instances. A Call's first
// word is inline, so up to 64 instances cost no allocation; more grow it.
type bitset []uint64

func (s bitset) has(i int) bool { return i>>6 < len(s) && s[i>>6]&(1<<(i&63)) != 0 }

func (s *bitset) set(i int) {
	for i>>6 >= len(*s) {
		*s = append(*s, 0)
	}
	(*s)[i>>6] |= 1 << (i & 63)
}
