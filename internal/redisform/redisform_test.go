package redisform

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/testcert"
)

// TestParseURLKeepsCredentialsOut gives ParseURL URLs with a password and
// a secret query parameter that do not parse: its error says what is
// wrong, without them.
func TestParseURLKeepsCredentialsOut(t *testing.T) {
	const pass, token = "PLANTED-pass", "PLANTED-token"
	for _, raw := range []string{
		"redis://user:" + pass + "@host:bad/0",
		"rediss://user:" + pass + "%zz@host:6379/0",
		"redis://user:" + pass + " x@127.0.0.1:nope/0?token=" + token,
		"redis://user:" + pass + "@host:6379/notadb?token=" + token,
		"rediss://host:26379/0?sentinel_password=" + pass + "%zz&master_set=mymaster",
		"rediss://host:26379/0?sentinel_password=" + pass, // without master_set
	} {
		_, err := ParseURL(raw)
		require.Error(t, err, raw)
		assert.NotContains(t, err.Error(), pass)
		assert.NotContains(t, err.Error(), token)
	}
}

// TestParseURLServerName checks the TLS server name of the options: none
// (each connection sends the host it dials), for one address or several,
// a cluster's or sentinels', with verification on and a DialCtxFn that
// makes it; and no TLS for redis://. The sentinels' options are the
// primary's: the same TLS config, the same dial timeout.
func TestParseURLServerName(t *testing.T) {
	for _, raw := range []string{
		"rediss://cache.example:6380/0",
		"rediss://node1.example:7000?addr=node2.example:7000&addr=node3.example:7000",
		"rediss://sentinel1.example:26379?addr=sentinel2.example:26379&master_set=mymaster",
	} {
		opt, err := ParseURL(raw)
		require.NoError(t, err, raw)
		require.NotNil(t, opt.TLSConfig, raw)
		assert.Empty(t, opt.TLSConfig.ServerName, raw)
		assert.Equal(t, uint16(tls.VersionTLS12), opt.TLSConfig.MinVersion, raw)
		assert.False(t, opt.TLSConfig.InsecureSkipVerify, raw)
		assert.NotNil(t, opt.DialCtxFn, raw)
		if opt.Sentinel.MasterSet != "" {
			assert.Same(t, opt.TLSConfig, opt.Sentinel.TLSConfig, raw)
		} else {
			assert.Nil(t, opt.Sentinel.TLSConfig, raw)
		}
	}
	opt, err := ParseURL("redis://node1.example:7000?addr=node2.example:7000")
	require.NoError(t, err)
	assert.Nil(t, opt.TLSConfig)
	assert.Nil(t, opt.DialCtxFn)

	opt, err = ParseURL("redis://sentinel1.example:26379?master_set=mymaster&dial_timeout=3s")
	require.NoError(t, err)
	assert.Nil(t, opt.Sentinel.TLSConfig, "redis:// dials the sentinels over plain TCP, as the primary")
	assert.Equal(t, 3*time.Second, opt.Sentinel.Dialer.Timeout)
	assert.Equal(t, 3*time.Second, opt.Dialer.Timeout)
}

// TestParseURLSentinelCredentials reads the sentinels' credentials from
// sentinel_username and sentinel_password, and the primary's from the
// userinfo; without master_set, the sentinels' are refused.
func TestParseURLSentinelCredentials(t *testing.T) {
	opt, err := ParseURL("rediss://app:data%40pass@sentinel1.example:26379?master_set=mymaster" +
		"&sentinel_username=watcher&sentinel_password=s%26pass")
	require.NoError(t, err)
	assert.Equal(t, "app", opt.Username)
	assert.Equal(t, "data@pass", opt.Password)
	assert.Equal(t, "watcher", opt.Sentinel.Username)
	assert.Equal(t, "s&pass", opt.Sentinel.Password)

	opt, err = ParseURL("redis://:data@sentinel1.example:26379?master_set=mymaster")
	require.NoError(t, err)
	assert.Equal(t, "data", opt.Password)
	assert.Empty(t, opt.Sentinel.Username)
	assert.Empty(t, opt.Sentinel.Password, "the primary's password is not sent to the sentinels")

	opt, err = ParseURL("redis://sentinel1.example:26379?master_set=mymaster&sentinel_password=first&sentinel_password=second")
	require.NoError(t, err)
	assert.Equal(t, "first", opt.Sentinel.Password, "the first counts, as rueidis reads its parameters")

	for _, raw := range []string{
		"redis://cache.example:6379?sentinel_password=PLANTED",
		"rediss://cache.example:6379?sentinel_username=PLANTED",
	} {
		_, err := ParseURL(raw)
		require.Error(t, err, raw)
		assert.Contains(t, err.Error(), "master_set")
		assert.NotContains(t, err.Error(), "PLANTED")
	}
}

// TestParseURLVerifiesEachNode connects over TLS to one-node Redis
// Clusters through ParseURL's options. The node is announced as
// 127.0.0.1, so rueidis dials it there, after the URL's first address.
// A certificate is accepted if it chains to the configured roots and
// names either that address (each node its own certificate) or the
// URL's first host (one certificate for all nodes, naming the DNS name
// the URL uses); any other is refused.
func TestParseURLVerifiesEachNode(t *testing.T) {
	down, err := redisproc.FreePort()
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		// names are the certificate's names: IP addresses or DNS names.
		names []string
		// otherCA: the certificate's CA is not the one the client trusts.
		otherCA bool
		// first is the URL's first host: 127.0.0.2 is down, the client
		// goes on to 127.0.0.1 (the node, by the URL's addr); localhost
		// is the node, which then announces itself as 127.0.0.1.
		first string
		ok    bool
	}{
		{name: "each node its own IP address, first host down", names: []string{"127.0.0.1"}, first: "127.0.0.2", ok: true},
		{name: "one certificate naming the URL's DNS name", names: []string{"localhost"}, first: "localhost", ok: true},
		{name: "neither the dialed address nor the URL's host", names: []string{"redis.example", "10.9.9.9"}, first: "localhost"},
		{name: "another CA", names: []string{"127.0.0.1", "localhost"}, otherCA: true, first: "localhost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, ca := redistest.NewTLS(t, t.TempDir(), tc.names...)
			if tc.otherCA {
				ca = testcert.Write(t, t.TempDir(), tc.names...)
			}
			// The node announces itself as 127.0.0.1 (see
			// redisproc.ClusterOptions.TLS).
			c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 1, TLS: files})
			_, tlsPort, err := net.SplitHostPort(c.TLSAddrs[0])
			require.NoError(t, err)
			raw := "rediss://" + tc.first + ":" + tlsPort
			if tc.first == "127.0.0.2" {
				raw = "rediss://127.0.0.2:" + strconv.Itoa(down) + "?addr=" + c.TLSAddrs[0]
			}
			opt, err := ParseURL(raw)
			require.NoError(t, err)
			opt.TLSConfig.RootCAs = ca
			opt.DisableCache = true
			client, err := rueidis.NewClient(opt)
			if !tc.ok {
				t.Logf("refused: %v", err)
				require.Error(t, err)
				var verr *tls.CertificateVerificationError
				assert.ErrorAs(t, err, &verr)
				if tc.otherCA {
					assert.ErrorAs(t, err, new(x509.UnknownAuthorityError))
				} else {
					assert.ErrorAs(t, err, new(x509.HostnameError))
				}
				return
			}
			require.NoError(t, err)
			defer client.Close()
			assert.Equal(t, rueidis.ClientModeCluster, client.Mode())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, client.Do(ctx, client.B().Set().Key("k").Value("v").Build()).Error())
			// The node is dialed at the address it announces.
			nodes := client.Nodes()
			require.Contains(t, nodes, c.TLSAddrs[0])
		})
	}
}

// TestParseURLKeepsTheCallersTLSSettings dials, with the options'
// DialCtxFn, a TLS server on 127.0.0.1 whose certificate names
// localhost only, through a URL naming localhost: what a caller sets on
// the options' TLSConfig after ParseURL still counts.
func TestParseURLKeepsTheCallersTLSSettings(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.Write(t, dir, "localhost")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	addr := ln.Addr().String()
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	errRefused := errors.New("refused by the caller")

	for _, tc := range []struct {
		name string
		url  string
		set  func(c *tls.Config)
		// want is nil for a connection, or an error the dial's wraps;
		// text, if any, is in the dial's error.
		want error
		text string
	}{
		{name: "as parsed", url: "rediss://localhost:" + port},
		{name: "other roots", url: "rediss://localhost:" + port, set: func(c *tls.Config) { c.RootCAs = x509.NewCertPool() },
			want: x509.UnknownAuthorityError{}},
		{name: "expired at the config's time", url: "rediss://localhost:" + port,
			set:  func(c *tls.Config) { c.Time = func() time.Time { return time.Now().Add(2 * time.Hour) } },
			want: x509.CertificateInvalidError{}},
		{name: "a URL naming the dialed address", url: "rediss://127.0.0.1:" + port, want: x509.HostnameError{}},
		{name: "a URL naming a third host", url: "rediss://redis.example:" + port, want: x509.HostnameError{},
			text: "valid neither for 127.0.0.1, the host dialed, nor for redis.example, the host the Redis URL names"},
		{name: "an explicit server name the certificate names", url: "rediss://127.0.0.1:" + port,
			set: func(c *tls.Config) { c.ServerName = "localhost" }},
		{name: "an explicit server name it does not name", url: "rediss://localhost:" + port,
			set: func(c *tls.Config) { c.ServerName = "redis.example" }, want: x509.HostnameError{}},
		{name: "skip_verify", url: "rediss://127.0.0.1:" + port + "?skip_verify=true"},
		{name: "VerifyPeerCertificate given the verified chains", url: "rediss://localhost:" + port,
			set: func(c *tls.Config) {
				c.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
					if len(raw) != 1 || len(chains) != 1 || len(chains[0]) != 2 {
						return errors.New("not the chain verified")
					}
					return nil
				}
			}},
		{name: "VerifyPeerCertificate refusing", url: "rediss://localhost:" + port,
			set: func(c *tls.Config) {
				c.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error { return errRefused }
			}, want: errRefused},
		{name: "VerifyConnection given the verified chains", url: "rediss://localhost:" + port,
			set: func(c *tls.Config) {
				c.VerifyConnection = func(cs tls.ConnectionState) error {
					if len(cs.VerifiedChains) != 1 || cs.ServerName != "" {
						return errors.New("not the chain verified, or a server name sent for an IP address")
					}
					return nil
				}
			}},
		{name: "VerifyConnection refusing", url: "rediss://localhost:" + port,
			set: func(c *tls.Config) {
				c.VerifyConnection = func(tls.ConnectionState) error { return errRefused }
			}, want: errRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt, err := ParseURL(tc.url)
			require.NoError(t, err)
			require.NotNil(t, opt.DialCtxFn)
			opt.TLSConfig.RootCAs = ca
			if tc.set != nil {
				tc.set(opt.TLSConfig)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// rueidis dials a cluster's nodes and a primary at the
			// addresses announced: here 127.0.0.1.
			c, err := opt.DialCtxFn(ctx, addr, &opt.Dialer, opt.TLSConfig)
			if tc.want == nil {
				require.NoError(t, err)
				c.Close()
				return
			}
			require.Error(t, err)
			if errors.Is(tc.want, errRefused) {
				assert.ErrorIs(t, err, errRefused)
			} else {
				assert.ErrorAs(t, err, reflect.New(reflect.TypeOf(tc.want)).Interface())
			}
			assert.Contains(t, err.Error(), tc.text)
		})
	}

	// A caller that takes the sentinels' TLS config away dials them over
	// plain TCP.
	opt, err := ParseURL("rediss://localhost:" + port + "?master_set=mymaster")
	require.NoError(t, err)
	opt.Sentinel.TLSConfig = nil
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { plain.Close() })
	c, err := opt.DialCtxFn(context.Background(), plain.Addr().String(), &opt.Dialer, opt.Sentinel.TLSConfig)
	require.NoError(t, err)
	_, isTLS := c.(*tls.Conn)
	assert.False(t, isTLS)
	c.Close()
}
