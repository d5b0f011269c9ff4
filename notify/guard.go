package notify

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// ErrForbiddenAddress is returned (wrapped) when a webhook target is, or
// resolves to, an address of the host's own networks (loopback, private,
// link-local and the like; see Forbidden) and the webhook does not allow
// private targets. Such a delivery is not retried.
var ErrForbiddenAddress = errors.New("notify: webhook target address not allowed")

// forbiddenPrefixes are ranges that IsPrivate, IsLoopback and the other
// netip predicates do not cover but that never hold a public receiver.
var forbiddenPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT, shared address space
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and broadcast
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
}

// embeddedIPv4 are IPv6 ranges that carry an IPv4 address a router may
// reach on the sender's behalf: the IPv4 address is checked too.
var embeddedIPv4 = []struct {
	prefix netip.Prefix
	offset int // of the IPv4 address in the 16 bytes
}{
	{netip.MustParsePrefix("64:ff9b::/96"), 12}, // NAT64
	{netip.MustParsePrefix("2002::/16"), 2},     // 6to4
}

// Forbidden reports whether a webhook may not be sent to ip unless
// private targets are allowed: loopback, private (RFC 1918, unique local
// IPv6), link-local, unspecified, multicast, carrier-grade NAT,
// documentation, benchmarking and reserved ranges, and IPv6 addresses
// that embed such an IPv4 address (IPv4-mapped, NAT64, 6to4).
func Forbidden(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return true
	}
	for _, p := range forbiddenPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	if ip.Is6() {
		b := ip.As16()
		for _, e := range embeddedIPv4 {
			if e.prefix.Contains(ip) {
				v4 := netip.AddrFrom4([4]byte(b[e.offset : e.offset+4]))
				if Forbidden(v4) {
					return true
				}
			}
		}
	}
	return false
}

// guardControl is a net.Dialer Control function that refuses to connect
// to a forbidden address. It runs after name resolution, on the address
// actually dialled, so a name that resolved to a public address when the
// webhook was configured and to a private one now (DNS rebinding) is
// refused all the same.
func guardControl(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot read dialled address %q: %v", ErrForbiddenAddress, address, err)
	}
	if Forbidden(ap.Addr()) {
		return fmt.Errorf("%w: %s is a loopback, private or otherwise internal address", ErrForbiddenAddress, ap.Addr())
	}
	return nil
}

// checkTargetIPs returns an error wrapping ErrForbiddenAddress when one of
// ips is forbidden.
func checkTargetIPs(host string, ips []netip.Addr) error {
	for _, ip := range ips {
		if Forbidden(ip) {
			if ip.String() == host {
				return fmt.Errorf("%w: %s is a loopback, private or otherwise internal address", ErrForbiddenAddress, ip)
			}
			return fmt.Errorf("%w: %s resolves to %s, a loopback, private or otherwise internal address", ErrForbiddenAddress, host, ip)
		}
	}
	return nil
}
