package ssehttp

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flowsrun/flows/queue"
)

// Caller limits: the start rate and the cap on waiting tasks of each
// caller are the queue's (queue.BrokerConfig.CallerLimits), which the
// Handler names the caller for; the cap on open streams is the Handler's
// own (Config.MaxStreamsPerCaller).

// The prefixes of caller names. An anonymous caller is named for its
// address, anonPrefix and the address; a principal by its ID, as it is,
// unless the ID begins with one of these, which is then escaped with
// escapePrefix in front (ip:1.2.3.4 becomes id:ip:1.2.3.4, id:x becomes
// id:id:x). So no principal is named as an anonymous caller is, and no
// two principals share a name, whatever the IDs Identify returns; and
// the name of a principal is its ID, the Owner of its tasks, in all but
// these cases.
const (
	anonPrefix   = "ip:"
	escapePrefix = "id:"
)

// callerName names the caller of r, whose principal is p, for caller
// limits: its Principal.ID (escaped when it begins with "ip:" or "id:",
// see CallerName), or, for an anonymous caller, "ip:" and its address
// (see clientIP), or the /64 network of an IPv6 address: a host is
// commonly given a whole /64, and would otherwise be as many callers as
// it has addresses.
func (h *Handler) callerName(r *http.Request, p Principal) string {
	if p.ID != "" {
		return CallerName(p.ID)
	}
	ip := h.clientIP(r)
	if a, err := netip.ParseAddr(ip); err == nil && a.Unmap().Is6() {
		if net64, err := a.WithZone("").Prefix(64); err == nil {
			ip = net64.String()
		}
	}
	return anonPrefix + ip
}

// CallerName returns the caller name (queue.EnqueueOptions.Caller) that
// the Handler gives the caller limits of a principal with the ID id: the
// ID itself, or, when it begins with "ip:" (the prefix of the names of
// anonymous callers, "ip:" and their address) or "id:", the ID with "id:"
// in front. A host that enqueues tasks from its own code for a user, and
// wants them counted with the user's starts over HTTP, passes
// CallerName(user's ID) as the Caller.
func CallerName(id string) string {
	if strings.HasPrefix(id, anonPrefix) || strings.HasPrefix(id, escapePrefix) {
		return escapePrefix + id
	}
	return id
}

// clientIP returns the address of the client of r: the host of
// r.RemoteAddr; or, when that address is in Config.TrustedProxies, the
// right-most address of the X-Forwarded-For headers that is not, since
// each trusted proxy appends the address it got the request from. An
// entry may carry a port, as some proxies write it (1.2.3.4:5678,
// [2001:db8::1]:443), or brackets without one ([2001:db8::1]); see
// forwardedAddr. An entry that is not an address ends the walk at the one
// after it.
func (h *Handler) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !h.trusted(addr.Unmap()) {
		return host
	}
	client := addr.Unmap()
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		hops := strings.Split(values[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			hop, ok := forwardedAddr(strings.TrimSpace(hops[j]))
			if !ok {
				return client.String()
			}
			client = hop.Unmap()
			if !h.trusted(client) {
				return client.String()
			}
		}
	}
	return client.String()
}

// forwardedAddr parses an entry of X-Forwarded-For: an address
// (203.0.113.7, 2001:db8::1), an IPv6 address in brackets
// ([2001:db8::1]), or an address and a port (203.0.113.7:5678,
// [2001:db8::1]:443), whose port it drops. It drops a zone too
// (fe80::1%eth0), which names an interface of the host that wrote the
// entry, not of ours. It reports false for anything else, an IPv4
// address in brackets among it.
func forwardedAddr(s string) (netip.Addr, bool) {
	if inner, ok := strings.CutPrefix(s, "["); ok {
		if inner, ok := strings.CutSuffix(inner, "]"); ok {
			a, err := netip.ParseAddr(inner)
			return a.WithZone(""), err == nil && a.Is6()
		}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.WithZone(""), true
}

// unmapPrefixes returns a copy of prefixes in which each IPv4-mapped IPv6
// prefix (::ffff:10.0.0.0/104, within ::ffff:0:0/96) is the IPv4 prefix
// it covers (10.0.0.0/8). New applies it to Config.TrustedProxies, since
// clientIP matches addresses in their IPv4 form (Unmap), which an IPv6
// prefix never contains. A prefix wider than ::ffff:0:0/96 covers IPv6
// addresses besides, and is left as written.
func unmapPrefixes(prefixes []netip.Prefix) []netip.Prefix {
	if prefixes == nil {
		return nil
	}
	out := make([]netip.Prefix, len(prefixes))
	for i, p := range prefixes {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
		}
		out[i] = p
	}
	return out
}

// trusted reports whether addr, in its IPv4 form if it has one (Unmap),
// is one of Config.TrustedProxies (made IPv4 where mapped, see
// unmapPrefixes). A prefix has no zone: addr's is not compared (a peer
// fe80::1%eth0 is in fe80::/10).
func (h *Handler) trusted(addr netip.Addr) bool {
	addr = addr.WithZone("")
	for _, p := range h.cfg.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// tooMany answers 429 with a Retry-After of wait (see setRetryAfter).
func tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	setRetryAfter(w, wait)
	writeError(w, http.StatusTooManyRequests, msg)
}

// setRetryAfter sets the Retry-After header of the answer to wait,
// rounded up to whole seconds (at least one).
func setRetryAfter(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.FormatInt(int64(max((wait+time.Second-1)/time.Second, 1)), 10))
}

// callerLimited answers err when it is a refusal by a caller limit of the
// queue (429; the Retry-After of the rate, or Config.Retry for the cap on
// waiting tasks), and reports whether it did.
func (h *Handler) callerLimited(w http.ResponseWriter, err error) bool {
	var le *queue.CallerLimitError
	if !errors.As(err, &le) {
		return false
	}
	wait := le.RetryAfter
	if wait <= 0 {
		wait = h.cfg.Retry
	}
	tooMany(w, wait, le.Error())
	return true
}

// streamSlots counts the open streams of each caller, in this process.
type streamSlots struct {
	mu   sync.Mutex
	open map[string]int
}

// take counts one more stream of caller, unless it holds max already; it
// reports whether it did.
func (s *streamSlots) take(caller string, max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[caller] >= max {
		return false
	}
	if s.open == nil {
		s.open = map[string]int{}
	}
	s.open[caller]++
	return true
}

// release counts one stream of caller less.
func (s *streamSlots) release(caller string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[caller]--; s.open[caller] <= 0 {
		delete(s.open, caller)
	}
}

// streamSlot takes a stream slot of the caller of r for the stream's life
// when Config.MaxStreamsPerCaller is set. It returns the release to
// defer, or false when the caller has no slot left: the request is then
// answered as retryStream does, with a Retry-After header of Config.Retry
// besides (the one sign in the headers that this is no stream). An
// EventSource takes a 429 as final, so a page one stream over its
// caller's cap would lose its live view for good; this answer it follows,
// and reconnects after the delay with its Last-Event-ID, until another
// of the caller's streams has closed. The refused request takes no slot.
func (h *Handler) streamSlot(w http.ResponseWriter, r *http.Request, p Principal) (func(), bool) {
	if h.cfg.MaxStreamsPerCaller <= 0 {
		return func() {}, true
	}
	caller := h.callerName(r, p)
	if !h.streams.take(caller, h.cfg.MaxStreamsPerCaller) {
		setRetryAfter(w, h.cfg.Retry)
		h.retryStream(w, r, "too many open streams for this caller")
		return nil, false
	}
	return func() { h.streams.release(caller) }, true
}
