package intentions

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
)

// Anonymous is the identity of a caller that proved none: an app that
// advertised nothing (meshctl, a client-only program).
const Anonymous = "anonymous"

// Rule is one intention. Source and Destination are service names or "*".
// A "*" source covers every proven identity, as in Consul (where a caller
// without a certificate never reaches a proxy), never Anonymous: a process
// that proved nothing is let in only by a rule that names anonymous, or by
// the anonymous default (Compile).
type Rule struct {
	Source      string `yaml:"source" json:"source"`
	Destination string `yaml:"destination" json:"destination"`
	Action      string `yaml:"action" json:"action"` // allow or deny
}

// Decision is the answer for one call: whether it may go on, and the rule
// that said so, as errors, explanations and metrics name it.
type Decision struct {
	Allow bool
	Rule  string
}

// Set is a compiled set of rules; it is never changed, so any number of
// calls read it at once.
type Set struct {
	byDest    map[string]*destRules
	anyDest   destRules
	deflt     Decision // for proven callers no rule matches
	anonDeflt Decision // for Anonymous callers no rule names
	n         int
	rules     []Rule // as compiled, for people (Applying)
}

type destRules struct {
	bySource map[string]Decision
	any      *Decision
}

// Compile checks rules and makes a Set. Precedence is Consul's: an exact
// source and destination first, then any source to that destination, then
// that source to any destination, then any to any; defaultAllow decides
// when none matches. For an Anonymous caller "*" sources do not match, and
// anonymousAllow decides when no rule names anonymous (with Consul, its
// ACL default as for everyone; with the embedded registry, allow only
// while no intention exists at all).
func Compile(rules []Rule, defaultAllow, anonymousAllow bool) (*Set, error) {
	s := &Set{byDest: make(map[string]*destRules), n: len(rules), rules: slices.Clone(rules)}
	s.deflt = Decision{Allow: defaultAllow, Rule: "default deny (no intention matches)"}
	if defaultAllow {
		s.deflt.Rule = "default allow (no intention matches)"
	}
	s.anonDeflt = Decision{Allow: anonymousAllow, Rule: "default deny for anonymous callers (* covers proven identities only; an intention must name anonymous)"}
	if anonymousAllow {
		s.anonDeflt.Rule = "default allow (no intention names anonymous)"
	}
	for _, r := range rules {
		if r.Source == "" || r.Destination == "" {
			return nil, fmt.Errorf("intention %q => %q: source and destination must be set (a name or *)", r.Source, r.Destination)
		}
		if r.Action != "allow" && r.Action != "deny" {
			return nil, fmt.Errorf("intention %s => %s: action %q, want allow or deny", r.Source, r.Destination, r.Action)
		}
		d := Decision{Allow: r.Action == "allow", Rule: fmt.Sprintf("intention %s => %s (%s)", r.Source, r.Destination, r.Action)}
		if err := s.add(r.Source, r.Destination, d); err != nil {
			return nil, err
		}
	}
	return s, nil
}

var errDuplicate = errors.New("is given twice")

func (s *Set) add(source, dest string, d Decision) error {
	dr := &s.anyDest
	if dest != "*" {
		if dr = s.byDest[dest]; dr == nil {
			dr = &destRules{}
			s.byDest[dest] = dr
		}
	}
	if source == "*" {
		if dr.any != nil {
			return fmt.Errorf("intention * => %s %w", dest, errDuplicate)
		}
		dr.any = &d
		return nil
	}
	if dr.bySource == nil {
		dr.bySource = make(map[string]Decision)
	}
	if _, dup := dr.bySource[source]; dup {
		return fmt.Errorf("intention %s => %s %w", source, dest, errDuplicate)
	}
	dr.bySource[source] = d
	return nil
}

// Decide answers whether source may call dest.
func (s *Set) Decide(source []byte, dest string) Decision {
	anon := string(source) == Anonymous
	if dr := s.byDest[dest]; dr != nil {
		if d, ok := dr.bySource[string(source)]; ok {
			return d
		}
		if dr.any != nil && !anon {
			return *dr.any
		}
	}
	if d, ok := s.anyDest.bySource[string(source)]; ok {
		return d
	}
	switch {
	case anon:
		return s.anonDeflt
	case s.anyDest.any != nil:
		return *s.anyDest.any
	}
	return s.deflt
}

// Applying lists, for people, the rules that can decide calls to dest (its
// own and the "*" destination's, most specific first, as Decide weighs
// them) and what decides when none matches.
func (s *Set) Applying(dest string) (rules []Rule, defaults []string) {
	rank := func(r Rule) int {
		n := 0
		if r.Destination == "*" {
			n += 2
		}
		if r.Source == "*" {
			n++
		}
		return n
	}
	for _, r := range s.rules {
		if r.Destination == dest || r.Destination == "*" {
			rules = append(rules, r)
		}
	}
	slices.SortStableFunc(rules, func(a, b Rule) int { return rank(a) - rank(b) })
	return rules, []string{s.deflt.Rule, s.anonDeflt.Rule}
}

// Len is the number of rules.
func (s *Set) Len() int { return s.n }

// Table holds the Set in force; a new one replaces it for the next call.
type Table struct {
	cur     atomic.Pointer[Set]
	changes atomic.Int64
}

// NewTable returns a Table holding s.
func NewTable(s *Set) *Table {
	t := &Table{}
	t.cur.Store(s)
	return t
}

// Set puts s in force.
func (t *Table) Set(s *Set) {
	t.cur.Store(s)
	t.changes.Add(1)
}

// Current is the Set in force.
func (t *Table) Current() *Set { return t.cur.Load() }

// Decide answers from the Set in force.
func (t *Table) Decide(source []byte, dest string) Decision { return t.cur.Load().Decide(source, dest) }

// Changes counts the Sets put in force since the first.
func (t *Table) Changes() int64 { return t.changes.Load() }
