package meshd

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
)

// Grant lets the processes of one local Unix user advertise some names.
type Grant struct {
	User     string   `yaml:"user"`     // a user name or a numeric uid
	Services []string `yaml:"services"` // names it may advertise; "*": any
}

// AdvertiseRule decides which app may advertise which service: the proof an
// advertise needs before meshd registers anything. An app proves a name by
// one of, in order:
//
//   - a Consul ACL token sent with the advertise (SDK: client.Options.Token;
//     the "mesh-token" header of the Hyperbahn call): meshd registers the
//     instance with that token, so Consul decides (service:write on the name);
//   - the Unix user of its process, for apps on this host's loopback or on
//     meshd's Unix socket (how tchannel-go's Hyperbahn client, which has no
//     token to send, is let in): a Grant for that user, or SameUser for
//     meshd's own user.
type AdvertiseRule struct {
	Grants   []Grant
	SameUser bool // processes of meshd's own user may advertise any name
	// Tokens: the registry is Consul, which checks a token by registering.
	Tokens bool

	uid    int              // meshd's own
	byUID  map[int][]string // compiled Grants
	lookup func(nc net.Conn) (int, error)
}

// compile resolves the grants' users once, at start.
func (r *AdvertiseRule) compile() error {
	r.uid, r.byUID = os.Getuid(), map[int][]string{}
	if r.lookup == nil {
		r.lookup = peerUID
	}
	for _, g := range r.Grants {
		uid, err := strconv.Atoi(g.User)
		if err != nil {
			u, lerr := user.Lookup(g.User)
			if lerr != nil {
				return fmt.Errorf("advertise grant for user %q: %w", g.User, lerr)
			}
			uid, _ = strconv.Atoi(u.Uid)
		}
		if len(g.Services) == 0 {
			return fmt.Errorf("advertise grant for user %q names no services", g.User)
		}
		r.byUID[uid] = append(r.byUID[uid], g.Services...)
	}
	return nil
}

// String is the rule as meshd prints it at start.
func (r *AdvertiseRule) String() string {
	if r == nil {
		return "any app may advertise any name (no rule)"
	}
	var parts []string
	if r.Tokens {
		parts = append(parts, "apps with a Consul token allowing service:write on the name")
	}
	if r.SameUser {
		parts = append(parts, fmt.Sprintf("local apps of meshd's own user (uid %d), any name", r.uid))
	}
	for uid, names := range r.byUID {
		parts = append(parts, fmt.Sprintf("local apps of uid %d: %s", uid, strings.Join(names, ",")))
	}
	if len(parts) == 0 {
		return "no app may advertise (no token checks, grants or same_user)"
	}
	return strings.Join(parts, "; ")
}

// errRefused wraps every refusal, for the metric and for tests.
var errRefused = errors.New("advertise refused")

// check decides an advertise of names by an app; token is what it
// sent (may be ""); nc is its connection's socket. byToken says Consul is to decide, with that token.
func (r *AdvertiseRule) check(nc net.Conn, names []string, token string) (byToken bool, err error) {
	if r == nil {
		return false, nil
	}
	if token != "" && r.Tokens {
		return true, nil
	}
	uid, err := r.lookup(nc)
	if err != nil {
		how := "send a Consul token (client.Options.Token)"
		if !r.Tokens {
			how = "run it on this host, as a user the config grants the names to"
		}
		return false, fmt.Errorf("%w: %v; %s", errRefused, err, how)
	}
	granted := r.byUID[uid]
	for _, n := range names {
		if r.SameUser && uid == r.uid || slices.Contains(granted, "*") || slices.Contains(granted, n) {
			continue
		}
		return false, fmt.Errorf("%w: uid %d may not advertise %q (rule: %s)", errRefused, uid, n, r)
	}
	return false, nil
}

// peerUID finds the Unix user of the process at the far end of nc: on a
// Unix socket the kernel's peer credentials (SO_PEERCRED); on TCP from this
// host, /proc/net/tcp and tcp6, which list every socket with its owner (the
// app's socket is the one whose local address is the connection's remote
// one).
func peerUID(nc net.Conn) (int, error) {
	for { // the socket under its wrappers (the gRPC gateway's, outbox.Socket)
		w, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = w.NetConn()
	}
	if uc, ok := nc.(*net.UnixConn); ok {
		return unixPeerUID(uc)
	}
	local, lok := nc.LocalAddr().(*net.TCPAddr)
	remote, rok := nc.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return 0, errors.New("neither a Unix socket nor TCP")
	}
	if !remote.IP.IsLoopback() && !remote.IP.Equal(local.IP) {
		return 0, fmt.Errorf("the app at %s is not on this host", remote)
	}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if uid, ok := findSocket(table, remote, local); ok {
			return uid, nil
		}
	}
	return 0, fmt.Errorf("the socket of the app at %s is not in /proc/net/tcp (another network namespace?)", remote)
}

// findSocket looks in one /proc/net table for the socket at local address
// addr connected to peer, and returns its owner's uid.
func findSocket(table string, addr, peer *net.TCPAddr) (int, bool) {
	f, err := os.Open(table)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	v6 := strings.HasSuffix(table, "6")
	want, wantPeer := procAddr(addr, v6), procAddr(peer, v6)
	sc := bufio.NewScanner(f)
	sc.Scan() // the header line
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[1] != want || fields[2] != wantPeer {
			continue
		}
		uid, err := strconv.Atoi(fields[7])
		return uid, err == nil
	}
	return 0, false
}

// procAddr writes an address as /proc/net/tcp does: the IP as 32-bit words
// in host (little-endian) order, in hex, then ":" and the port in hex.
func procAddr(a *net.TCPAddr, v6 bool) string {
	ip := a.IP.To4()
	if v6 {
		ip = a.IP.To16()
	}
	if ip == nil {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(ip); i += 4 {
		fmt.Fprintf(&b, "%02X%02X%02X%02X", ip[i+3], ip[i+2], ip[i+1], ip[i])
	}
	fmt.Fprintf(&b, ":%04X", a.Port)
	return b.String()
}
