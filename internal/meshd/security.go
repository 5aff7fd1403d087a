package meshd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/discovery/consul"
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
	stop       chan struct{}
}

func (s *security) close() {
	close(s.stop)
	if s.trust != nil {
		s.trust.Close()
	}
}

func openSecurity(o Options, reg discovery.Registry, log *slog.Logger) (*security, error) {
	_, withConsul := reg.(*consul.Registry)
	sec := &security{stop: make(chan struct{})}
	var client *api.Client
	if withConsul {
		var err error
		if client, err = consulClient(o); err != nil {
			return nil, err
		}
	}
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
		empty, _ := intentions.Compile(nil, false) // until Consul answers
		sec.intentions = intentions.NewTable(empty)
		go intentions.FollowConsul(client, sec.intentions, o.DefaultIntention, sec.stop, log)
	} else {
		set, err := intentions.Compile(o.Intentions, o.DefaultIntention != "deny")
		if err != nil {
			return nil, err
		}
		sec.intentions = intentions.NewTable(set)
	}
	return sec, nil
}

// consulClient is an API client for the agent the registry uses.
func consulClient(o Options) (*api.Client, error) {
	ac := api.DefaultConfig()
	if o.Consul != "" {
		ac.Address = o.Consul
	}
	ac.Token = o.ConsulToken
	ac.Datacenter = o.ConsulDC
	return api.NewClient(ac)
}
