package intentions

import (
	"context"
	"log/slog"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/internal/follow"
)

// FollowConsul keeps t current with Consul's intentions: one blocking query
// on /v1/connect/intentions (all of them, a few KiB even for hundreds), so a
// change is in force as soon as the servers answer. It runs until ctx ends,
// and returns at once then, even in the middle of a wait. An L7 intention
// (permissions instead of an action) decides on the call's method, as the
// path "/<method>" (Rule). Until the first answer t keeps what it had.
//
// deflt is "allow" or "deny" for calls no intention matches, or "" for
// Consul's own default: its ACL default policy, which every answer carries
// (X-Consul-Default-Acl-Policy), so a meshd follows it as Consul's proxies do.
func FollowConsul(ctx context.Context, client *api.Client, t *Table, deflt string, log *slog.Logger) {
	cfg := follow.Config{Failed: func(err error) {
		log.Warn("consul intentions not read; the last ones stay in force", "err", err)
	}}
	follow.Run(ctx, cfg, client.Connect().Intentions, func(list []*api.Intention, meta *api.QueryMeta) {
		rules := make([]Rule, 0, len(list))
		for _, in := range list {
			rules = append(rules, fromConsul(in))
		}
		defaultAllow := deflt == "allow" || deflt == "" && meta.DefaultACLPolicy == "allow"
		s, err := Compile(rules, defaultAllow, defaultAllow) // anonymous callers follow the default like everyone

		if err != nil {
			log.Warn("consul intentions do not compile; the last ones stay in force", "err", err)
			return
		}
		t.Set(s)
		log.Debug("intentions in force", "rules", s.Len())
	})
}

// fromConsul is a Consul intention as a Rule.
func fromConsul(in *api.Intention) Rule {
	r := Rule{Source: in.SourceName, Destination: in.DestinationName, Action: string(in.Action)}
	for _, p := range in.Permissions {
		perm := Permission{Action: string(p.Action)}
		if h := p.HTTP; h != nil {
			perm.HTTP = &HTTPMatch{PathExact: h.PathExact, PathPrefix: h.PathPrefix, PathRegex: h.PathRegex, Methods: h.Methods}
			for _, hd := range h.Header {
				perm.HTTP.Header = append(perm.HTTP.Header, HeaderMatch{Name: hd.Name, Present: hd.Present, Exact: hd.Exact,
					Prefix: hd.Prefix, Suffix: hd.Suffix, Contains: hd.Contains, Regex: hd.Regex, Invert: hd.Invert, IgnoreCase: hd.IgnoreCase})
			}
		}
		r.Permissions = append(r.Permissions, perm)
	}
	return r
}
