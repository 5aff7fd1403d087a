package intentions_test

import (
	"strings"
	"testing"

	"github.com/meshrpc/mesh/internal/intentions"
)

const anonDeny = "default deny for anonymous callers (* covers proven identities only; an intention must name anonymous)"

func TestPrecedenceIsConsuls(t *testing.T) {
	rules := []intentions.Rule{
		{Source: "*", Destination: "*", Action: "deny"},
		{Source: "web", Destination: "*", Action: "allow"},
		{Source: "*", Destination: "payments", Action: "deny"},
		{Source: "web", Destination: "payments", Action: "allow"},
		{Source: "batch", Destination: "payments", Action: "deny"},
		{Source: "*", Destination: "echo", Action: "allow"},
		{Source: intentions.Anonymous, Destination: "billing", Action: "allow"},
	}
	s, err := intentions.Compile(rules, true, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		source, dest string
		allow        bool
		rule         string
	}{
		{"web", "payments", true, "intention web => payments (allow)"},                    // exact beats all
		{"batch", "payments", false, "intention batch => payments (deny)"},                // exact deny
		{"api", "payments", false, "intention * => payments (deny)"},                      // any source to payments beats web => *
		{"web", "orders", true, "intention web => * (allow)"},                             // source to any
		{"api", "orders", false, "intention * => * (deny)"},                               // any to any
		{intentions.Anonymous, "payments", false, anonDeny},                               // * never covers anonymous callers
		{intentions.Anonymous, "echo", false, anonDeny},                                   // not even to allow them
		{intentions.Anonymous, "billing", true, "intention anonymous => billing (allow)"}, // a rule that names them does
		{"web", "billing", true, "intention web => * (allow)"},                            // and nothing else
	} {
		d := s.Decide([]byte(tc.source), tc.dest)
		if d.Allow != tc.allow || d.Rule != tc.rule {
			t.Errorf("%s => %s: %+v, want allow=%v by %q", tc.source, tc.dest, d, tc.allow, tc.rule)
		}
	}
}

func TestDefaults(t *testing.T) {
	for _, allow := range []bool{true, false} {
		s, err := intentions.Compile([]intentions.Rule{{Source: "a", Destination: "b", Action: "deny"}}, allow, allow)
		if err != nil {
			t.Fatal(err)
		}
		d := s.Decide([]byte("c"), "b")
		if d.Allow != allow || !strings.HasPrefix(d.Rule, "default ") {
			t.Errorf("default allow=%v: %+v", allow, d)
		}
	}
}

func TestCompileRefusesBadRules(t *testing.T) {
	for _, tc := range []struct {
		rules []intentions.Rule
		err   string
	}{
		{[]intentions.Rule{{Source: "a", Destination: "b", Action: "permit"}}, `action "permit"`},
		{[]intentions.Rule{{Source: "", Destination: "b", Action: "allow"}}, "must be set"},
		{[]intentions.Rule{{Source: "a", Destination: "b", Action: "allow"}, {Source: "a", Destination: "b", Action: "deny"}}, "given twice"},
		{[]intentions.Rule{{Source: "*", Destination: "*", Action: "allow"}, {Source: "*", Destination: "*", Action: "deny"}}, "given twice"},
	} {
		if _, err := intentions.Compile(tc.rules, false, false); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: err %v, want %q", tc.rules, err, tc.err)
		}
	}
}

func TestTableSwaps(t *testing.T) {
	deny, _ := intentions.Compile([]intentions.Rule{{Source: "web", Destination: "db", Action: "deny"}}, true, true)
	allow, _ := intentions.Compile(nil, true, true)
	tab := intentions.NewTable(deny)
	if tab.Decide([]byte("web"), "db").Allow {
		t.Fatal("denied call allowed")
	}
	tab.Set(allow)
	if !tab.Decide([]byte("web"), "db").Allow || tab.Changes() != 1 {
		t.Fatal("new set not in force")
	}
}

// BenchmarkDecide is the per-call cost of authorization at the destination
// meshd (issue target: at most 1µs), with a thousand rules in force.
func BenchmarkDecide(b *testing.B) {
	var rules []intentions.Rule
	for i := range 1000 {
		rules = append(rules, intentions.Rule{Source: "svc" + string(rune('a'+i%26)) + strings.Repeat("x", i%7), Destination: "dest" + string(rune('a'+i/26)), Action: "allow"})
	}
	rules = append(rules, intentions.Rule{Source: "web", Destination: "payments", Action: "allow"})
	s, err := intentions.Compile(dedupe(rules), false, false)
	if err != nil {
		b.Fatal(err)
	}
	tab := intentions.NewTable(s)
	src := []byte("web")
	b.ReportAllocs()
	for b.Loop() {
		if !tab.Decide(src, "payments").Allow {
			b.Fatal("denied")
		}
	}
}

func dedupe(rs []intentions.Rule) []intentions.Rule {
	seen := map[[2]string]bool{}
	var out []intentions.Rule
	for _, r := range rs {
		k := [2]string{r.Source, r.Destination}
		if !seen[k] {
			seen[k] = true
			out = append(out, r)
		}
	}
	return out
}
