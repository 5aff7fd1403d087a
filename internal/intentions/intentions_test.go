package intentions_test

import (
	"fmt"
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
		d := s.Decide([]byte(tc.source), tc.dest, "m", intentions.AppHeaders{})
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
		d := s.Decide([]byte("c"), "b", "m", intentions.AppHeaders{})
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
	if tab.Decide([]byte("web"), "db", "m", intentions.AppHeaders{}).Allow {
		t.Fatal("denied call allowed")
	}
	tab.Set(allow)
	if !tab.Decide([]byte("web"), "db", "m", intentions.AppHeaders{}).Allow || tab.Changes() != 1 {
		t.Fatal("new set not in force")
	}
}

// An L7 intention decides on the call's method as the path "/<method>":
// the first permission that matches decides, and none falls to the default;
// a match on what a TChannel call cannot carry never holds.
func TestPermissionsDecideOnTheMethod(t *testing.T) {
	rules := []intentions.Rule{
		{Source: "web", Destination: "KV", Permissions: []intentions.Permission{
			{Action: "allow", HTTP: &intentions.HTTPMatch{PathExact: "/KV::get"}},
			{Action: "deny", HTTP: &intentions.HTTPMatch{PathPrefix: "/KV::put", Methods: []string{"POST"}}}, // never: no verb
			{Action: "allow", HTTP: &intentions.HTTPMatch{PathRegex: "/KV::(list|scan)"}},
			{Action: "deny", HTTP: &intentions.HTTPMatch{PathPrefix: "/KV::"}},
		}},
		{Source: "*", Destination: "KV", Permissions: []intentions.Permission{
			{Action: "allow", HTTP: &intentions.HTTPMatch{PathPrefix: "/KV::get"}},
		}},
		{Source: "admin", Destination: "KV", Permissions: []intentions.Permission{{Action: "allow"}}}, // no match: every call
	}
	s, err := intentions.Compile(rules, false, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		source, method string
		allow          bool
		rule           string
	}{
		{"web", "KV::get", true, "intention web => KV, permission 1 (allow path_exact /KV::get)"},
		{"web", "KV::getAll", false, "intention web => KV, permission 4 (deny path_prefix /KV::)"}, // exact is exact
		{"web", "KV::put", false, "intention web => KV, permission 4 (deny path_prefix /KV::)"},    // the verb match never holds
		{"web", "KV::scan", true, "intention web => KV, permission 3 (allow path_regex /KV::(list|scan))"},
		{"web", "KV::scanAll", false, "intention web => KV, permission 4 (deny path_prefix /KV::)"}, // a regex matches the whole path
		{"web", "Other::x", false, "default deny (no intention matches)"},                           // no permission: the default
		{"orders", "KV::getAll", true, "intention * => KV, permission 1 (allow path_prefix /KV::get)"},
		{"orders", "KV::put", false, "default deny (no intention matches)"},
		{"admin", "KV::put", true, "intention admin => KV, permission 1 (allow, every call)"},
		{intentions.Anonymous, "KV::get", false, anonDeny}, // * covers proven callers only, L7 too
	} {
		d := s.Decide([]byte(tc.source), "KV", tc.method, intentions.AppHeaders{})
		if d.Allow != tc.allow || d.Rule != tc.rule {
			t.Errorf("%s → KV %s: %v by %q, want %v by %q", tc.source, tc.method, d.Allow, d.Rule, tc.allow, tc.rule)
		}
	}
}

func TestPermissionsThatCannotBeMeant(t *testing.T) {
	for _, r := range []intentions.Rule{
		{Source: "a", Destination: "b", Action: "allow", Permissions: []intentions.Permission{{Action: "deny"}}},
		{Source: "a", Destination: "b", Permissions: []intentions.Permission{{Action: "maybe"}}},
		{Source: "a", Destination: "b", Permissions: []intentions.Permission{{Action: "allow", HTTP: &intentions.HTTPMatch{PathPrefix: "KV::"}}}},
		{Source: "a", Destination: "b", Permissions: []intentions.Permission{{Action: "allow", HTTP: &intentions.HTTPMatch{PathExact: "/a", PathPrefix: "/a"}}}},
		{Source: "a", Destination: "b", Permissions: []intentions.Permission{{Action: "allow", HTTP: &intentions.HTTPMatch{PathRegex: "/(unclosed"}}}},
	} {
		if _, err := intentions.Compile([]intentions.Rule{r}, false, false); err == nil {
			t.Errorf("%+v compiled", r)
		}
	}
}

// setOf1000 is 1,000 intentions to 100 services, of which 100 carry 10
// permissions each (the call below meets the last).
func setOf1000(tb testing.TB) *intentions.Set {
	var rules []intentions.Rule
	for i := range 1000 {
		r := intentions.Rule{Source: fmt.Sprintf("caller-%d", i), Destination: fmt.Sprintf("svc-%d", i%100), Action: "allow"}
		if i%10 == 0 {
			r.Action = ""
			for p := range 10 {
				r.Permissions = append(r.Permissions, intentions.Permission{Action: "allow",
					HTTP: &intentions.HTTPMatch{PathPrefix: fmt.Sprintf("/Svc::method%d", p)}})
			}
		}
		rules = append(rules, r)
	}
	s, err := intentions.Compile(rules, false, false)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestDecideAllocatesNothing(t *testing.T) {
	s := setOf1000(t)
	caller := []byte("caller-500")
	if d := s.Decide(caller, "svc-0", "Svc::method9", intentions.AppHeaders{}); !d.Allow {
		t.Fatalf("%+v", d)
	}
	if n := testing.AllocsPerRun(1000, func() { s.Decide(caller, "svc-0", "Svc::method9", intentions.AppHeaders{}) }); n != 0 {
		t.Errorf("%v allocations per decision", n)
	}
}

// BenchmarkDecide is the per-call cost of authorization at a meshd: 1,000
// intentions, 100 of them with 10 permissions, and a call that meets the
// tenth permission of its intention (target: at most 1 µs, 0 allocations).
func BenchmarkDecide(b *testing.B) {
	s := setOf1000(b)
	caller := []byte("caller-500")
	b.ReportAllocs()
	for b.Loop() {
		s.Decide(caller, "svc-0", "Svc::method9", intentions.AppHeaders{})
	}
}

// thriftHeaders encodes Thrift's header list: nh:2 (k~2 v~2){nh}.
func thriftHeaders(kv ...string) []byte {
	b := []byte{0, byte(len(kv) / 2)}
	for _, s := range kv {
		b = append(b, byte(len(s)>>8), byte(len(s)))
		b = append(b, s...)
	}
	return b
}

// Header matches read the application headers of JSON and Thrift calls;
// a raw call has none, and an escaped JSON string is not matched.
func TestPermissionsMatchApplicationHeaders(t *testing.T) {
	s, err := intentions.Compile([]intentions.Rule{{Source: "web", Destination: "KV", Permissions: []intentions.Permission{
		{Action: "deny", HTTP: &intentions.HTTPMatch{Header: []intentions.HeaderMatch{{Name: "tenant", Exact: "blocked"}}}},
		{Action: "allow", HTTP: &intentions.HTTPMatch{PathPrefix: "/KV::", Header: []intentions.HeaderMatch{
			{Name: "tenant", Prefix: "acme-", IgnoreCase: true},
			{Name: "debug", Present: true, Invert: true},
		}}},
		{Action: "allow", HTTP: &intentions.HTTPMatch{Header: []intentions.HeaderMatch{{Name: "role", Regex: "admin|ops"}}}},
	}}}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	json := func(b string) intentions.AppHeaders {
		return intentions.AppHeaders{Scheme: []byte("json"), Raw: []byte(b)}
	}
	thrift := func(kv ...string) intentions.AppHeaders {
		return intentions.AppHeaders{Scheme: []byte("thrift"), Raw: thriftHeaders(kv...)}
	}
	for _, tc := range []struct {
		name  string
		h     intentions.AppHeaders
		allow bool
	}{
		{"json prefix, ignoring case", json(`{"tenant": "ACME-1", "n": 3}`), true},
		{"json exact deny comes first", json(`{"tenant":"blocked"}`), false},
		{"json inverted presence", json(`{"tenant":"acme-1","debug":"1"}`), false},
		{"json regex is whole", json(`{"role":"ops"}`), true},
		{"json regex not partial", json(`{"role":"opsx"}`), false},
		{"json after a nested value", json(`{"x":{"tenant":"blocked"},"tenant":"acme-2"}`), true},
		{"json escaped value is not matched", json(`{"tenant":"acme-\u0031"}`), false},
		{"thrift prefix", thrift("a", "b", "tenant", "acme-7"), true},
		{"thrift exact", thrift("tenant", "blocked"), false},
		{"proto keeps thrift's headers", intentions.AppHeaders{Scheme: []byte("proto"), Raw: thriftHeaders("tenant", "acme-3")}, true},
		{"raw has no headers", intentions.AppHeaders{Scheme: []byte("raw"), Raw: []byte(`{"tenant":"acme-1"}`)}, false},
		{"no headers at all", intentions.AppHeaders{}, false},
	} {
		if d := s.Decide([]byte("web"), "KV", "KV::get", tc.h); d.Allow != tc.allow {
			t.Errorf("%s: %v by %q, want %v", tc.name, d.Allow, d.Rule, tc.allow)
		}
	}
	h := json(`{"tenant":"acme-1","role":"x"}`)
	if n := testing.AllocsPerRun(1000, func() { s.Decide([]byte("web"), "KV", "KV::get", h) }); n != 0 {
		t.Errorf("%v allocations per decision with header matches", n)
	}
}
