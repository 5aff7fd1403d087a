package intentions

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
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
	Action      string `yaml:"action" json:"action,omitempty"` // allow or deny; empty with Permissions
	// Permissions make an L7 intention, as Consul's: the first whose match
	// holds for the call decides; when none does, the default does.
	Permissions []Permission `yaml:"permissions" json:"permissions,omitempty"`
}

// Permission is one permission of an L7 intention: an action, and what a
// call must carry for it to apply.
type Permission struct {
	Action string     `yaml:"action" json:"action"`
	HTTP   *HTTPMatch `yaml:"http" json:"http,omitempty"`
}

// HTTPMatch is Consul's HTTP match of a permission. The path of a TChannel
// call is "/" and its method (arg1): PathPrefix "/KV::" covers a Thrift
// service's methods. A TChannel call carries no HTTP verb, so a match that
// names Methods never holds; Header matches read the call's application
// headers (AppHeaders): a "raw" call has none.
type HTTPMatch struct {
	PathExact  string        `yaml:"path_exact" json:"path_exact,omitempty"`
	PathPrefix string        `yaml:"path_prefix" json:"path_prefix,omitempty"`
	PathRegex  string        `yaml:"path_regex" json:"path_regex,omitempty"`
	Methods    []string      `yaml:"methods" json:"methods,omitempty"`
	Header     []HeaderMatch `yaml:"header" json:"header,omitempty"`
}

// HeaderMatch is Consul's header condition of an HTTP match.
type HeaderMatch struct {
	Name       string `yaml:"name" json:"name"`
	Present    bool   `yaml:"present" json:"present,omitempty"`
	Exact      string `yaml:"exact" json:"exact,omitempty"`
	Prefix     string `yaml:"prefix" json:"prefix,omitempty"`
	Suffix     string `yaml:"suffix" json:"suffix,omitempty"`
	Contains   string `yaml:"contains" json:"contains,omitempty"`
	Regex      string `yaml:"regex" json:"regex,omitempty"`
	Invert     bool   `yaml:"invert" json:"invert,omitempty"`
	IgnoreCase bool   `yaml:"ignore_case" json:"ignore_case,omitempty"`
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
	bySource map[string]*entry
	any      *entry
}

// entry is one intention, compiled: an L4 one's Decision, or an L7 one's
// permissions in order.
type entry struct {
	Decision
	perms []permission
}

// permission is a Permission compiled to what a call's method is matched
// against: the path without its leading "/", so that no path is built per
// call.
type permission struct {
	Decision
	never         bool // it matches on what a TChannel call does not carry
	exact, prefix string
	hasExact      bool
	re            *regexp.Regexp // on the method; nil: no regex
	headers       []headerMatch
}

// headerMatch is a HeaderMatch compiled.
type headerMatch struct {
	HeaderMatch
	re *regexp.Regexp
}

func (p *permission) matches(method string, h AppHeaders) bool {
	switch {
	case p.never:
		return false
	case p.hasExact && method != p.exact:
		return false
	case !strings.HasPrefix(method, p.prefix):
		return false
	case p.re != nil && !p.re.MatchString(method):
		return false
	}
	for i := range p.headers {
		if !p.headers[i].matches(h) {
			return false
		}
	}
	return true
}

func (m *headerMatch) matches(h AppHeaders) bool {
	v, ok := h.Get(m.Name)
	eq := func(a []byte, b string) bool {
		if m.IgnoreCase {
			return strings.EqualFold(string(a), b)
		}
		return string(a) == b
	}
	var hit bool
	switch {
	case !ok:
	case m.Present:
		hit = true
	case m.Exact != "":
		hit = eq(v, m.Exact)
	case m.Prefix != "":
		hit = len(v) >= len(m.Prefix) && eq(v[:len(m.Prefix)], m.Prefix)
	case m.Suffix != "":
		hit = len(v) >= len(m.Suffix) && eq(v[len(v)-len(m.Suffix):], m.Suffix)
	case m.Contains != "":
		if m.IgnoreCase {
			hit = strings.Contains(strings.ToLower(string(v)), strings.ToLower(m.Contains))
		} else {
			hit = strings.Contains(string(v), m.Contains)
		}
	case m.re != nil:
		hit = m.re.Match(v)
	}
	return hit != m.Invert
}

// decide is the entry's answer for a call of method; deflt when an L7
// intention has no permission that matches.
func (e *entry) decide(method string, h AppHeaders, deflt Decision) Decision {
	if e.perms == nil {
		return e.Decision
	}
	for i := range e.perms {
		if e.perms[i].matches(method, h) {
			return e.perms[i].Decision
		}
	}
	return deflt
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
		e, err := compileRule(r)
		if err != nil {
			return nil, err
		}
		if err := s.add(r.Source, r.Destination, e); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// compileRule checks one rule and compiles it.
func compileRule(r Rule) (*entry, error) {
	name := fmt.Sprintf("intention %s => %s", r.Source, r.Destination)
	if r.Source == "" || r.Destination == "" {
		return nil, fmt.Errorf("intention %q => %q: source and destination must be set (a name or *)", r.Source, r.Destination)
	}
	if len(r.Permissions) == 0 {
		if r.Action != "allow" && r.Action != "deny" {
			return nil, fmt.Errorf("%s: action %q, want allow or deny", name, r.Action)
		}
		return &entry{Decision: Decision{Allow: r.Action == "allow", Rule: fmt.Sprintf("%s (%s)", name, r.Action)}}, nil
	}
	if r.Action != "" {
		return nil, fmt.Errorf("%s: an action and permissions: an L7 intention has permissions only", name)
	}
	e := &entry{}
	for i, p := range r.Permissions {
		if p.Action != "allow" && p.Action != "deny" {
			return nil, fmt.Errorf("%s, permission %d: action %q, want allow or deny", name, i+1, p.Action)
		}
		cp := permission{Decision: Decision{Allow: p.Action == "allow", Rule: fmt.Sprintf("%s, permission %d (%s%s)", name, i+1, p.Action, describe(p.HTTP))}}
		if h := p.HTTP; h != nil {
			if n := btoi(h.PathExact != "") + btoi(h.PathPrefix != "") + btoi(h.PathRegex != ""); n > 1 {
				return nil, fmt.Errorf("%s, permission %d: at most one of path_exact, path_prefix and path_regex", name, i+1)
			}
			cp.never = len(h.Methods) > 0
			for _, hm := range h.Header {
				if hm.Name == "" {
					return nil, fmt.Errorf("%s, permission %d: a header match without a name", name, i+1)
				}
				n := btoi(hm.Present) + btoi(hm.Exact != "") + btoi(hm.Prefix != "") + btoi(hm.Suffix != "") + btoi(hm.Contains != "") + btoi(hm.Regex != "")
				if n != 1 {
					return nil, fmt.Errorf("%s, permission %d: header %q: exactly one of present, exact, prefix, suffix, contains and regex", name, i+1, hm.Name)
				}
				c := headerMatch{HeaderMatch: hm}
				if hm.Regex != "" {
					re, err := regexp.Compile("^(?:" + hm.Regex + ")$")
					if err != nil {
						return nil, fmt.Errorf("%s, permission %d: header %q: %w", name, i+1, hm.Name, err)
					}
					c.re = re
				}
				cp.headers = append(cp.headers, c)
			}
			switch {
			case h.PathExact != "":
				if !strings.HasPrefix(h.PathExact, "/") {
					return nil, fmt.Errorf("%s, permission %d: path_exact %q must begin with /", name, i+1, h.PathExact)
				}
				cp.exact, cp.hasExact = h.PathExact[1:], true
			case h.PathPrefix != "":
				if !strings.HasPrefix(h.PathPrefix, "/") {
					return nil, fmt.Errorf("%s, permission %d: path_prefix %q must begin with /", name, i+1, h.PathPrefix)
				}
				cp.prefix = h.PathPrefix[1:]
			case h.PathRegex != "":
				// The regex matches the whole path (as Consul's, RE2); a
				// path's "/" is taken off it so the method is matched as is.
				expr := h.PathRegex
				if !strings.HasPrefix(expr, "/") {
					return nil, fmt.Errorf("%s, permission %d: path_regex %q must begin with / (a method's path does)", name, i+1, h.PathRegex)
				}
				re, err := regexp.Compile("^(?:" + expr[1:] + ")$")
				if err != nil {
					return nil, fmt.Errorf("%s, permission %d: path_regex: %w", name, i+1, err)
				}
				cp.re = re
			}
		}
		e.perms = append(e.perms, cp)
	}
	return e, nil
}

// describe says what a permission matches, for its rule's name.
func describe(h *HTTPMatch) string {
	if h == nil {
		return ", every call"
	}
	var parts []string
	for _, kv := range [][2]string{{"path_exact", h.PathExact}, {"path_prefix", h.PathPrefix}, {"path_regex", h.PathRegex}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+" "+kv[1])
		}
	}
	if len(h.Methods) > 0 {
		parts = append(parts, "methods "+strings.Join(h.Methods, ",")+": a TChannel call has none")
	}
	for _, hm := range h.Header {
		parts = append(parts, "header "+hm.Name)
	}
	if len(parts) == 0 {
		return ", every call"
	}
	return " " + strings.Join(parts, ", ")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

var errDuplicate = errors.New("is given twice")

func (s *Set) add(source, dest string, d *entry) error {
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
		dr.any = d
		return nil
	}
	if dr.bySource == nil {
		dr.bySource = make(map[string]*entry)
	}
	if _, dup := dr.bySource[source]; dup {
		return fmt.Errorf("intention %s => %s %w", source, dest, errDuplicate)
	}
	dr.bySource[source] = d
	return nil
}

// Decide answers whether source may call method of dest with application
// headers h: two map lookups, then the permissions of the intention that
// matched, if it has any.
func (s *Set) Decide(source []byte, dest, method string, h AppHeaders) Decision {
	anon := string(source) == Anonymous
	deflt := s.deflt
	if anon {
		deflt = s.anonDeflt
	}
	if dr := s.byDest[dest]; dr != nil {
		if e, ok := dr.bySource[string(source)]; ok {
			return e.decide(method, h, deflt)
		}
		if dr.any != nil && !anon {
			return dr.any.decide(method, h, deflt)
		}
	}
	if e, ok := s.anyDest.bySource[string(source)]; ok {
		return e.decide(method, h, deflt)
	}
	if !anon && s.anyDest.any != nil {
		return s.anyDest.any.decide(method, h, deflt)
	}
	return deflt
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
func (t *Table) Decide(source []byte, dest, method string, h AppHeaders) Decision {
	return t.cur.Load().Decide(source, dest, method, h)
}

// Changes counts the Sets put in force since the first.
func (t *Table) Changes() int64 { return t.changes.Load() }
