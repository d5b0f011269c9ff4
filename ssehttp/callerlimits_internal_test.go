package ssehttp

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// FuzzClientIP checks that the address naming an anonymous caller is the
// connection's own, unless the connection is a trusted proxy, and then
// one the X-Forwarded-For header holds (with or without a port or
// brackets, without its zone) or the proxy's own: never text made up of
// anything else.
func FuzzClientIP(f *testing.F) {
	f.Add("127.0.0.1:5000", "203.0.113.1")
	f.Add("127.0.0.1:5000", "198.51.100.7, 203.0.113.1, 127.0.0.2")
	f.Add("10.0.0.1:1", "not an address, 1.2.3.4")
	f.Add("[::1]:80", "::ffff:1.2.3.4")
	f.Add("203.0.113.9:443", "127.0.0.1")
	f.Add("127.0.0.1:5000", "203.0.113.1:5678, [2001:db8::1]:443, 127.0.0.2:80")
	f.Add("127.0.0.1:5000", "[2001:db8::1], [::1]")
	f.Add("[::1]:80", "fe80::1%eth0, [fe80::2%eth1]:443, ::1%lo")
	h := &Handler{cfg: Config{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
	}}}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		got := h.clientIP(r)
		host, _, err := net.SplitHostPort(remote)
		if err != nil {
			host = remote
		}
		addr, err := netip.ParseAddr(host)
		if err != nil || !h.trusted(addr.Unmap()) {
			if got != host {
				t.Fatalf("untrusted %q: got %q, want its own host", remote, got)
			}
			return
		}
		if got == addr.Unmap().String() {
			return
		}
		for _, hop := range strings.Split(xff, ",") {
			hop = strings.TrimSpace(hop)
			if host, _, err := net.SplitHostPort(hop); err == nil {
				hop = host
			}
			hop = strings.TrimSuffix(strings.TrimPrefix(hop, "["), "]")
			if a, err := netip.ParseAddr(hop); err == nil && a.WithZone("").Unmap().String() == got {
				return
			}
		}
		t.Fatalf("trusted %q with X-Forwarded-For %q: got %q, which is neither", remote, xff, got)
	})
}

// TestClientIP: the walk over X-Forwarded-For takes an entry with a port
// (some proxies append one) for its address, and still stops at one that
// is not an address.
func TestClientIP(t *testing.T) {
	h := &Handler{cfg: Config{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
	}}}
	for _, tc := range []struct {
		name, xff, want string
	}{
		{"IPv4", "203.0.113.1", "203.0.113.1"},
		{"IPv4 with a port", "203.0.113.1:5678", "203.0.113.1"},
		{"bare IPv6", "2001:db8::1", "2001:db8::1"},
		{"bracketed IPv6 with a port", "[2001:db8::1]:443", "2001:db8::1"},
		{"mapped IPv4 with a port", "[::ffff:203.0.113.1]:443", "203.0.113.1"},
		{"trusted hops with ports", "203.0.113.1:5678, 127.0.0.9:80, [::1]:443", "203.0.113.1"},
		{"the right-most untrusted hop, port or none", "198.51.100.7, 203.0.113.1:5678", "203.0.113.1"},
		{"garbage", "not an address", "127.0.0.1"},
		{"garbage after an address", "203.0.113.1, garbage", "127.0.0.1"},
		{"garbage before an address", "garbage, 203.0.113.1:1", "203.0.113.1"},
		{"garbage behind a trusted hop", "garbage, 127.0.0.9:80", "127.0.0.9"},
		{"port out of range", "203.0.113.1:65536", "127.0.0.1"},
		{"empty port", "203.0.113.1:", "127.0.0.1"},
		{"not a number", "203.0.113.1:http", "127.0.0.1"},
		{"bracketed IPv4", "[203.0.113.1]:5678", "127.0.0.1"},
		{"IPv6 with a port but no brackets", "2001:db8::1:443", "2001:db8::1:443"}, // an address: the port cannot be told apart
		{"bracketed IPv6", "[2001:db8::1]", "2001:db8::1"},
		{"bracketed mapped IPv4", "[::ffff:203.0.113.1]", "203.0.113.1"},
		{"bracketed trusted hop", "203.0.113.1, [::1], 127.0.0.9", "203.0.113.1"},
		{"bracketed IPv4 without a port", "[203.0.113.1]", "127.0.0.1"},
		{"empty brackets", "[]", "127.0.0.1"},
		{"unclosed bracket", "[2001:db8::1", "127.0.0.1"},
		{"unopened bracket", "2001:db8::1]", "127.0.0.1"},
		{"doubled brackets", "[[2001:db8::1]]", "127.0.0.1"},
		{"brackets around an address and a port", "[2001:db8::1:443]", "2001:db8::1:443"}, // an address, as without brackets
		{"brackets then garbage", "[2001:db8::1]x", "127.0.0.1"},
		{"empty entry", "203.0.113.1, ", "127.0.0.1"},
		{"IPv6 with a zone", "fe80::1%eth0", "fe80::1"},
		{"bracketed IPv6 with a zone", "[fe80::1%eth0]", "fe80::1"},
		{"bracketed IPv6 with a zone and a port", "[fe80::1%eth0]:443", "fe80::1"},
		{"trusted hop with a zone", "203.0.113.1, ::1%lo", "203.0.113.1"},
		{"IPv4 with a zone", "203.0.113.1%eth0", "127.0.0.1"},
		{"empty zone", "fe80::1%", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: "127.0.0.1:5000", Header: http.Header{"X-Forwarded-For": {tc.xff}}}
			if got := h.clientIP(r); got != tc.want {
				t.Errorf("X-Forwarded-For %q: got %q, want %q", tc.xff, got, tc.want)
			}
		})
	}
}

// FuzzCallerName checks that caller names keep callers apart: two
// principals with two IDs have two names, and no principal has the name
// of an anonymous caller, whatever its ID reads like.
func FuzzCallerName(f *testing.F) {
	f.Add("alice", "bob", "127.0.0.1:5000")
	f.Add("ip:127.0.0.1", "id:ip:127.0.0.1", "127.0.0.1:5000")
	f.Add("id:x", "x", "[2001:db8::1]:443")
	f.Add("ip:2001:db8::/64", "id:id:x", "[2001:db8::1]:443")
	h := &Handler{}
	f.Fuzz(func(t *testing.T, id1, id2, remote string) {
		if id1 == "" || id2 == "" {
			t.Skip("an empty ID is an anonymous caller")
		}
		r := &http.Request{RemoteAddr: remote}
		anon := h.callerName(r, Principal{})
		if !strings.HasPrefix(anon, "ip:") {
			t.Fatalf("anonymous caller from %q named %q", remote, anon)
		}
		n1, n2 := h.callerName(r, Principal{ID: id1}), h.callerName(r, Principal{ID: id2})
		if n1 == anon || n2 == anon {
			t.Fatalf("principal %q or %q named %q, as the anonymous caller from %q is", id1, id2, anon, remote)
		}
		if (n1 == n2) != (id1 == id2) {
			t.Fatalf("principals %q and %q named %q and %q", id1, id2, n1, n2)
		}
		if n1 != id1 && !strings.HasPrefix(id1, "ip:") && !strings.HasPrefix(id1, "id:") {
			t.Fatalf("principal %q named %q: only an ID beginning ip: or id: is escaped", id1, n1)
		}
	})
}

// FuzzIdempotencyKey checks that a key is accepted as it was sent, or
// refused with a message, and that an accepted key is 1 to
// MaxIdempotencyKeyLen printable ASCII bytes.
func FuzzIdempotencyKey(f *testing.F) {
	for _, k := range []string{"order-1", "", "a\tb", "é", strings.Repeat("k", 256)} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		r := &http.Request{Header: http.Header{IdempotencyKeyHeader: {key}}}
		got, msg := idempotencyKey(r)
		if msg != "" {
			if got != "" {
				t.Fatalf("refused %q with %q but returned %q", key, msg, got)
			}
			return
		}
		if got != key || len(got) == 0 || len(got) > MaxIdempotencyKeyLen {
			t.Fatalf("accepted %q as %q", key, got)
		}
		for i := range len(got) {
			if got[i] < 0x20 || got[i] > 0x7e {
				t.Fatalf("accepted %q with byte %#x", key, got[i])
			}
		}
	})
}

// TestTrustedPrefixForms: a trusted proxy written as an IPv4 prefix or as
// its IPv4-mapped IPv6 form matches an IPv4 peer either way it comes
// (clientIP unmaps it), and an IPv6 prefix matches IPv6 addresses only,
// with or without a zone.
func TestTrustedPrefixForms(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		in     []string
		out    []string
	}{
		{"10.0.0.0/8", []string{"10.1.2.3", "::ffff:10.1.2.3"}, []string{"11.0.0.1", "::ffff:11.0.0.1", "::a01:203"}},
		{"::ffff:10.0.0.0/104", []string{"10.1.2.3", "::ffff:10.1.2.3"}, []string{"11.0.0.1", "::a01:203", "2001:db8::1"}},
		{"::ffff:10.1.2.3/128", []string{"10.1.2.3", "::ffff:10.1.2.3"}, []string{"10.1.2.4"}},
		{"::ffff:10.1.2.3/120", []string{"10.1.2.200"}, []string{"10.1.3.1"}}, // not masked as written
		{"::ffff:0:0/96", []string{"10.1.2.3", "192.0.2.1"}, []string{"2001:db8::1", "::1"}},
		{"2001:db8::/32", []string{"2001:db8::1", "2001:db8:ffff::1"}, []string{"2001:db9::1", "10.1.2.3", "::ffff:10.1.2.3"}},
		{"::/0", []string{"2001:db8::1", "::1"}, []string{"10.1.2.3", "::ffff:10.1.2.3"}},
		{"::/80", []string{"::1"}, []string{"10.1.2.3"}},                                       // wider than ::ffff:0:0/96: left an IPv6 range
		{"fe80::/10", []string{"fe80::1", "fe80::1%eth0"}, []string{"fec0::1%eth0", "::1%lo"}}, // a prefix has no zone: an address's is not compared
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			h := &Handler{cfg: Config{TrustedProxies: unmapPrefixes([]netip.Prefix{netip.MustParsePrefix(tc.prefix)})}}
			for _, a := range tc.in {
				if !h.trusted(netip.MustParseAddr(a).Unmap()) {
					t.Errorf("%s is not trusted", a)
				}
			}
			for _, a := range tc.out {
				if h.trusted(netip.MustParseAddr(a).Unmap()) {
					t.Errorf("%s is trusted", a)
				}
			}
		})
	}
	given := []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}
	unmapPrefixes(given)
	if given[0] != netip.MustParsePrefix("::ffff:10.0.0.0/104") {
		t.Errorf("the caller's slice was changed: %v", given)
	}
	if unmapPrefixes(nil) != nil {
		t.Error("no prefixes became some")
	}
}
