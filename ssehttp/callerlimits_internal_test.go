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
// one the X-Forwarded-For header holds or the proxy's own: never text
// made up of anything else.
func FuzzClientIP(f *testing.F) {
	f.Add("127.0.0.1:5000", "203.0.113.1")
	f.Add("127.0.0.1:5000", "198.51.100.7, 203.0.113.1, 127.0.0.2")
	f.Add("10.0.0.1:1", "not an address, 1.2.3.4")
	f.Add("[::1]:80", "::ffff:1.2.3.4")
	f.Add("203.0.113.9:443", "127.0.0.1")
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
			if a, err := netip.ParseAddr(strings.TrimSpace(hop)); err == nil && a.Unmap().String() == got {
				return
			}
		}
		t.Fatalf("trusted %q with X-Forwarded-For %q: got %q, which is neither", remote, xff, got)
	})
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
