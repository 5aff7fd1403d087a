package intentions

import (
	"log/slog"
	"time"

	"github.com/hashicorp/consul/api"
)

// FollowConsul keeps t current with Consul's intentions: one blocking query
// on /v1/connect/intentions (all of them, a few KiB even for hundreds), so a
// change is in force as soon as the servers answer. It runs until stop is
// closed. An L7 intention (permissions instead of an action) cannot be
// decided by meshd, which sees no HTTP paths: it denies, and says so.
// Until the first answer t keeps what it had.
//
// deflt is "allow" or "deny" for calls no intention matches, or "" for
// Consul's own default: its ACL default policy, which every answer carries
// (X-Consul-Default-Acl-Policy), so a meshd follows it as Consul's proxies do.
func FollowConsul(client *api.Client, t *Table, deflt string, stop <-chan struct{}, log *slog.Logger) {
	var index uint64
	backoff := time.Second
	for {
		list, meta, err := client.Connect().Intentions(&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute})
		select {
		case <-stop:
			return
		default:
		}
		if err != nil {
			log.Warn("consul intentions not read; the last ones stay in force", "err", err, "retry_in", backoff)
			select {
			case <-stop:
				return
			case <-time.After(backoff):
			}
			backoff, index = min(2*backoff, 30*time.Second), 0
			continue
		}
		backoff = time.Second
		switch {
		case meta.LastIndex < index: // a restarted agent: start over
			index = 0
			continue
		case meta.LastIndex == index: // the wait ended with no change
			continue
		}
		index = meta.LastIndex
		rules := make([]Rule, 0, len(list))
		for _, in := range list {
			action := string(in.Action)
			if action == "" { // an L7 intention: permissions on HTTP paths
				action = "deny"
			}
			rules = append(rules, Rule{Source: in.SourceName, Destination: in.DestinationName, Action: action})
		}
		defaultAllow := deflt == "allow" || deflt == "" && meta.DefaultACLPolicy == "allow"
		s, err := Compile(rules, defaultAllow)
		if err != nil {
			log.Warn("consul intentions do not compile; the last ones stay in force", "err", err)
			continue
		}
		t.Set(s)
		log.Debug("intentions in force", "rules", s.Len())
	}
}
