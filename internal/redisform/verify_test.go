package redisform

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chainSpec describes a test certificate chain: a root, optionally an
// intermediate, and a leaf holding names (IP addresses or DNS names).
type chainSpec struct {
	names        []string
	intermediate bool
	// leafEKU is the leaf's extended key usage; server auth when nil.
	leafEKU []x509.ExtKeyUsage
	// rootCurve is the root's key curve; P-256 when nil.
	rootCurve elliptic.Curve
}

// makeChain returns a pool holding spec's root and the server
// certificate: the leaf and, if any, the intermediate, as a server
// sends them.
func makeChain(t *testing.T, spec chainSpec) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	curve := spec.rootCurve
	if curve == nil {
		curve = elliptic.P256()
	}
	rootKey, err := ecdsa.GenerateKey(curve, rand.Reader)
	require.NoError(t, err)
	issue := func(tmpl, parent *x509.Certificate, pub any, key crypto.Signer) *x509.Certificate {
		t.Helper()
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		require.NoError(t, err)
		cert, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return cert
	}
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redisform test root"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	root := issue(rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	issuer, issuerKey := root, crypto.Signer(rootKey)
	var chain [][]byte
	var inter *x509.Certificate
	if spec.intermediate {
		interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		inter = issue(&x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redisform test intermediate"},
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, root, &interKey.PublicKey, rootKey)
		issuer, issuerKey = inter, interKey
	}
	eku := spec.leafEKU
	if eku == nil {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: spec.names[0]},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku}
	for _, name := range spec.names {
		if ip := net.ParseIP(name); ip != nil {
			leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
		} else {
			leafTmpl.DNSNames = append(leafTmpl.DNSNames, name)
		}
	}
	leaf := issue(leafTmpl, issuer, &leafKey.PublicKey, issuerKey)
	chain = append(chain, leaf.Raw)
	if inter != nil {
		chain = append(chain, inter.Raw)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool, tls.Certificate{Certificate: chain, PrivateKey: leafKey, Leaf: leaf}
}

// serveTLS starts a TLS server on network address listen that, after
// each handshake, writes one byte (so that a TLS 1.3 client reads the
// session tickets sent after the handshake) and waits for the client to
// close. It returns the address it listens at.
func serveTLS(t *testing.T, listen string, config *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", listen, config)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", listen, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := c.Write([]byte{1}); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// dialParsed dials addr with the DialCtxFn and TLSConfig ParseURL returns
// for url, the config changed by set, and reads the server's byte.
func dialParsed(t *testing.T, url, addr string, set func(*tls.Config)) (*tls.Conn, error) {
	t.Helper()
	opt, err := ParseURL(url)
	require.NoError(t, err)
	set(opt.TLSConfig)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := opt.DialCtxFn(ctx, addr, &opt.Dialer, opt.TLSConfig)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// TestParseURLVerifiesResumedHandshakes resumes TLS 1.2 and 1.3
// sessions with a ClientSessionCache a caller set: a resumed handshake
// is checked as a full one is (chain, time, names), the session it
// resumes being no proof.
func TestParseURLVerifiesResumedHandshakes(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			ca, cert := makeChain(t, chainSpec{names: []string{"localhost"}})
			addr := serveTLS(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
				MinVersion: version, MaxVersion: version})
			_, port, err := net.SplitHostPort(addr)
			require.NoError(t, err)
			url := "rediss://localhost:" + port
			cache := tls.NewLRUClientSessionCache(4)
			with := func(more func(*tls.Config)) func(*tls.Config) {
				return func(c *tls.Config) {
					c.RootCAs, c.ClientSessionCache = ca, cache
					if more != nil {
						more(c)
					}
				}
			}
			first, err := dialParsed(t, url, addr, with(nil))
			require.NoError(t, err)
			require.False(t, first.ConnectionState().DidResume)
			again, err := dialParsed(t, url, addr, with(nil))
			require.NoError(t, err)
			require.True(t, again.ConnectionState().DidResume, "the second handshake resumes the first's session")

			// As crypto/tls does, a resumed handshake does not call the
			// caller's VerifyPeerCertificate; VerifyConnection it does,
			// with the chains verified.
			peerCalls, connChains := 0, 0
			again, err = dialParsed(t, url, addr, with(func(c *tls.Config) {
				c.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error { peerCalls++; return nil }
				c.VerifyConnection = func(cs tls.ConnectionState) error { connChains = len(cs.VerifiedChains); return nil }
			}))
			require.NoError(t, err)
			require.True(t, again.ConnectionState().DidResume)
			assert.Zero(t, peerCalls)
			assert.Equal(t, 1, connChains)

			// A refused resumption drops the session from the cache
			// (crypto/tls): each case starts from a good handshake.
			for _, bad := range []struct {
				why  string
				url  string
				set  func(*tls.Config)
				want any
			}{
				{why: "roots that do not hold the CA", url: url,
					set: func(c *tls.Config) { c.RootCAs = x509.NewCertPool() }, want: new(x509.UnknownAuthorityError)},
				{why: "after the certificate expired", url: url,
					set:  func(c *tls.Config) { c.Time = func() time.Time { return time.Now().Add(2 * time.Hour) } },
					want: new(x509.CertificateInvalidError)},
				{why: "a URL naming neither name", url: "rediss://redis.example:" + port, want: new(x509.HostnameError)},
			} {
				_, err := dialParsed(t, url, addr, with(nil))
				require.NoError(t, err)
				_, err = dialParsed(t, bad.url, addr, with(bad.set))
				assert.ErrorAs(t, err, bad.want, "resumed with %s", bad.why)
			}
		})
	}
}

// TestParseURLChecksTheChain dials servers whose chains differ from a
// good one in one thing each.
func TestParseURLChecksTheChain(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec chainSpec
		// leafOnly: the server sends its leaf without the intermediate.
		leafOnly bool
		// want is nil for a connection, else the error type refused with.
		want error
	}{
		{name: "through an intermediate the server sends", spec: chainSpec{names: []string{"localhost"}, intermediate: true}},
		{name: "through an intermediate the server does not send", spec: chainSpec{names: []string{"localhost"}, intermediate: true},
			leafOnly: true, want: x509.UnknownAuthorityError{}},
		{name: "a leaf for client auth only", spec: chainSpec{names: []string{"localhost"},
			leafEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, want: x509.CertificateInvalidError{}},
		{name: "a leaf for any usage", spec: chainSpec{names: []string{"localhost"},
			leafEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, cert := makeChain(t, tc.spec)
			if tc.leafOnly {
				cert.Certificate = cert.Certificate[:1]
			}
			addr := serveTLS(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
			_, port, err := net.SplitHostPort(addr)
			require.NoError(t, err)
			_, err = dialParsed(t, "rediss://localhost:"+port, addr, func(c *tls.Config) { c.RootCAs = ca })
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			var verr *tls.CertificateVerificationError
			assert.ErrorAs(t, err, &verr)
			switch tc.want.(type) {
			case x509.UnknownAuthorityError:
				assert.ErrorAs(t, err, new(x509.UnknownAuthorityError))
			case x509.CertificateInvalidError:
				var cerr x509.CertificateInvalidError
				require.ErrorAs(t, err, &cerr)
				assert.Equal(t, x509.IncompatibleUsage, cerr.Reason)
			}
		})
	}
}

// TestParseURLOverIPv6 dials a server on [::1]: the dialed host is an
// IPv6 address in brackets, the URL's host one without.
func TestParseURLOverIPv6(t *testing.T) {
	for _, tc := range []struct {
		name  string
		names []string
		host  string // the URL's host
		ok    bool
	}{
		{name: "a certificate naming the dialed address", names: []string{"::1"}, host: "redis.example", ok: true},
		{name: "a certificate naming the URL's address", names: []string{"::1"}, host: "[::1]", ok: true},
		{name: "a certificate naming the URL's DNS name", names: []string{"localhost"}, host: "localhost", ok: true},
		{name: "the URL's DNS name with a trailing dot", names: []string{"localhost"}, host: "localhost.", ok: true},
		{name: "neither", names: []string{"::2", "localhost"}, host: "redis.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, cert := makeChain(t, chainSpec{names: tc.names})
			addr := serveTLS(t, "[::1]:0", &tls.Config{Certificates: []tls.Certificate{cert}})
			_, port, err := net.SplitHostPort(addr)
			require.NoError(t, err)
			_, err = dialParsed(t, "rediss://"+tc.host+":"+port, addr, func(c *tls.Config) { c.RootCAs = ca })
			if tc.ok {
				require.NoError(t, err)
				return
			}
			assert.ErrorAs(t, err, new(x509.HostnameError))
		})
	}
}

// TestEitherNameRefusesWithoutACertificate calls the check directly
// with what no handshake should give it: no certificate.
func TestEitherNameRefusesWithoutACertificate(t *testing.T) {
	called := false
	c := eitherName(&tls.Config{VerifyConnection: func(tls.ConnectionState) error { called = true; return nil }},
		"127.0.0.1", "localhost")
	require.Error(t, c.VerifyConnection(tls.ConnectionState{}))
	require.Error(t, c.VerifyConnection(tls.ConnectionState{DidResume: true}))
	assert.False(t, called, "the caller's VerifyConnection is not asked to accept what the check refused")
}
