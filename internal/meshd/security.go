package meshd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/trust"
)

// security is what the options say of trust: the host boundary's
// identities, the advertise rule and the intentions, with what feeds them.
type security struct {
	prove      func(ctx context.Context, service, token string) error
	trust      *trust.Store
	rule       *AdvertiseRule
	intentions *intentions.Table
	stop       context.CancelFunc // ends following Consul's intentions
	following  sync.WaitGroup
}

// close stops what feeds the rules, at once, and waits for it.
func (s *security) close() {
	s.stop()
	s.following.Wait()
	if s.trust != nil {
		s.trust.Close()
	}
}

// openSecurity sets up trust from the options; client is the Consul agent
// the registry uses (nil: the embedded registry).
func openSecurity(o Options, client *api.Client, log *slog.Logger) (*security, error) {
	withConsul := client != nil
	sec := &security{stop: func() {}}
	if withConsul {
		sec.prove = func(ctx context.Context, service, token string) error {
			// The agent signs a leaf for a service only for a token with
			// service:write on it: the same proof a registration needs,
			// asked of a documented endpoint the agent answers from its cache.
			_, _, err := client.Agent().ConnectCALeaf(service, (&api.QueryOptions{Token: token}).WithContext(ctx))
			return err
		}
	}
	sec.rule = &AdvertiseRule{Grants: o.AdvertiseGrants, SameUser: o.AdvertiseSameUser == "on", Tokens: withConsul}

	hostBoundary := o.PeerListen != "" || o.PeersFile != ""
	mode := o.TLS
	if mode == "auto" {
		switch {
		case !hostBoundary:
			mode = "off" // one host: nothing to secure between hosts
		case withConsul:
			mode = "consul"
		case o.TLSCert != "":
			mode = "files"
		default:
			return nil, errors.New("the host boundary (--peer-listen, --peers-file) needs identities: --tls-cert, --tls-key and --tls-ca, or Consul's CA; --tls off leaves it plaintext")
		}
	}
	switch mode {
	case "consul":
		if !withConsul {
			return nil, errors.New("--tls consul needs Consul as the registry")
		}
		sec.trust = trust.FromConsul(client, log)
	case "files":
		var err error
		if sec.trust, err = trust.FromFiles(o.TLSCert, o.TLSKey, o.TLSCA, log); err != nil {
			return nil, fmt.Errorf("--tls files: %w", err)
		}
	}

	if withConsul {
		if len(o.Intentions) > 0 {
			return nil, errors.New("intentions in the config file apply to the embedded registry; with Consul write them in Consul (consul intention create)")
		}
		empty, _ := intentions.Compile(nil, false, false) // until Consul answers
		sec.intentions = intentions.NewTable(empty)
		var ctx context.Context
		ctx, sec.stop = context.WithCancel(context.Background())
		sec.following.Go(func() { intentions.FollowConsul(ctx, client, sec.intentions, o.DefaultIntention, log) })
	} else {
		// Anonymous callers get the default only while no intention exists:
		// an operator who writes intentions lets them in by naming them.
		allow := o.DefaultIntention != "deny"
		set, err := intentions.Compile(o.Intentions, allow, allow && len(o.Intentions) == 0)
		if err != nil {
			return nil, err
		}
		sec.intentions = intentions.NewTable(set)
	}
	return sec, nil
}
