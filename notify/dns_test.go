package notify_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// fakeDNS answers the A queries of a Go resolver with the address it is
// set to, speaking the DNS wire protocol over in-memory connections, so
// that a test can make a name resolve to a public address now and to a
// loopback one later, as a DNS rebinding attack does.
type fakeDNS struct {
	mu      sync.Mutex
	answers map[string]netip.Addr // by lowercase name without the final dot
	queries int
}

func newFakeDNS() *fakeDNS { return &fakeDNS{answers: map[string]netip.Addr{}} }

func (d *fakeDNS) set(name string, ip netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.answers[strings.ToLower(name)] = ip
}

func (d *fakeDNS) queryCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries
}

// resolver returns a resolver that asks d, and nobody else.
func (d *fakeDNS) resolver(t *testing.T) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			client, server := net.Pipe() // not a PacketConn: the resolver frames messages as on TCP
			go d.serve(server)
			return client, nil
		},
	}
}

// serve answers the queries sent on c, each framed by a 2-byte length.
func (d *fakeDNS) serve(c net.Conn) {
	defer c.Close()
	for {
		var n uint16
		if binary.Read(c, binary.BigEndian, &n) != nil {
			return
		}
		q := make([]byte, n)
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		resp := d.answer(q)
		if resp == nil {
			return
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

// answer builds the response to query q: one A record when the name is
// known and the type is A, no record otherwise (NOERROR, or NXDOMAIN for
// an unknown name).
func (d *fakeDNS) answer(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	// The question: labels up to a zero byte, then type and class.
	i := 12
	var labels []string
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	question := q[12 : i+5]
	qtype := binary.BigEndian.Uint16(q[i+1:])
	name := strings.ToLower(strings.Join(labels, "."))

	d.mu.Lock()
	d.queries++
	ip, known := d.answers[name]
	d.mu.Unlock()

	flags := uint16(0x8180) // response, recursion desired and available, NOERROR
	if !known {
		flags |= 3 // NXDOMAIN
	}
	var answers uint16
	if known && qtype == 1 && ip.Is4() {
		answers = 1
	}
	resp := make([]byte, 12, 64)
	copy(resp, q[:2]) // the id
	binary.BigEndian.PutUint16(resp[2:], flags)
	binary.BigEndian.PutUint16(resp[4:], 1)
	binary.BigEndian.PutUint16(resp[6:], answers)
	resp = append(resp, question...)
	if answers == 1 {
		resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4) // name at offset 12, A, IN, TTL 1 s, 4 bytes
		a := ip.As4()
		resp = append(resp, a[:]...)
	}
	return resp
}
