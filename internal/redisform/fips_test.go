package redisform

import (
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParseURLKeepsFIPSChainRules runs itself again with
// GODEBUG=fips140=on, where crypto/tls accepts only chains of
// FIPS-approved keys: a chain through a P-224 root, which crypto/tls
// refuses given a ServerName, is refused by ParseURL's check too.
func TestParseURLKeepsFIPSChainRules(t *testing.T) {
	if os.Getenv("REDISFORM_FIPS_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestParseURLKeepsFIPSChainRules$", "-test.v")
		cmd.Env = append(os.Environ(), "REDISFORM_FIPS_CHILD=1", "GODEBUG=fips140=on")
		out, err := cmd.CombinedOutput()
		t.Logf("with fips140=on:\n%s", out)
		require.NoError(t, err)
		return
	}
	require.True(t, fips140.Enabled(), "the child runs in FIPS 140-3 mode")
	ca, cert := makeChain(t, chainSpec{names: []string{"localhost"}, rootCurve: elliptic.P224()})
	addr := serveTLS(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	// crypto/tls's own check (an explicit ServerName) refuses the chain.
	_, err = dialParsed(t, "rediss://localhost:"+port, addr, func(c *tls.Config) {
		c.RootCAs, c.ServerName = ca, "localhost"
	})
	require.ErrorContains(t, err, "FIPS")
	_, err = dialParsed(t, "rediss://localhost:"+port, addr, func(c *tls.Config) { c.RootCAs = ca })
	var verr *tls.CertificateVerificationError
	assert.ErrorAs(t, err, &verr)
	assert.ErrorContains(t, err, "FIPS")

	// A chain of approved keys passes.
	ca, cert = makeChain(t, chainSpec{names: []string{"localhost"}, intermediate: true})
	addr = serveTLS(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	_, port, err = net.SplitHostPort(addr)
	require.NoError(t, err)
	_, err = dialParsed(t, "rediss://localhost:"+port, addr, func(c *tls.Config) { c.RootCAs = ca })
	assert.NoError(t, err)
}
