package notify_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/notify"
)

func TestForbidden(t *testing.T) {
	tests := []struct {
		ip        string
		forbidden bool
	}{
		{"127.0.0.1", true},
		{"127.255.0.9", true},
		{"::1", true},
		{"10.1.2.3", true},
		{"172.16.0.1", true},
		{"172.31.255.255", true},
		{"192.168.1.1", true},
		{"169.254.169.254", true}, // cloud metadata
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"fc00::1", true},
		{"fd12:3456::1", true},
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"::", true},
		{"100.64.0.1", true},
		{"224.0.0.1", true},
		{"ff02::1", true},
		{"255.255.255.255", true},
		{"198.18.0.1", true},
		{"192.0.2.10", true},
		{"::ffff:127.0.0.1", true}, // IPv4-mapped
		{"::ffff:10.0.0.1", true},
		{"64:ff9b::a00:1", true},     // NAT64 of 10.0.0.1
		{"2002:a00:1::1", true},      // 6to4 of 10.0.0.1
		{"2002:5db8:d822::1", false}, // 6to4 of 93.184.216.34
		{"64:ff9b::5db8:d822", false},
		{"93.184.216.34", false},
		{"8.8.8.8", false},
		{"172.32.0.1", false},
		{"100.128.0.1", false},
		{"2606:2800:220:1:248:1893:25c8:1946", false},
		{"::ffff:93.184.216.34", false},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			assert.Equal(t, tt.forbidden, notify.Forbidden(netip.MustParseAddr(tt.ip)))
		})
	}
	assert.True(t, notify.Forbidden(netip.Addr{}), "the zero Addr")
}
