package redisform

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/testcert"
)

// sentinelURL returns a rediss:// URL naming s's sentinels as host
// (127.0.0.1 or localhost) and the master, then more.
func sentinelURL(s *redistest.Sentinel, host, more string) string {
	var b strings.Builder
	b.WriteString("rediss://")
	for i, sn := range s.Sentinels {
		if i > 0 {
			b.WriteString("addr=")
		}
		b.WriteString(host + ":" + strconv.Itoa(sn.Port()))
		if i == 0 {
			b.WriteString("?")
		} else {
			b.WriteString("&")
		}
	}
	b.WriteString("master_set=" + s.MasterName() + more)
	return b.String()
}

// TestParseURLSentinelsOverTLS reaches a primary through sentinels that,
// as the primary and its replica, listen on TLS only: with rediss://, the
// sentinels are dialed over TLS, their certificates checked as the
// primary's is (chained to the roots, valid for the host dialed or the
// URL's first host), and one that fails the check is refused.
func TestParseURLSentinelsOverTLS(t *testing.T) {
	for _, tc := range []struct {
		name string
		// data and sentinels are the names of the data servers' and the
		// sentinels' certificates.
		data, sentinels []string
		// otherCA: the sentinels' certificate is of a CA the client does
		// not trust (the servers trust both).
		otherCA bool
		// host is the URL's host of every sentinel.
		host string
		// failover: the primary is killed, and the client follows the
		// sentinels to the replica they promote.
		failover bool
		// refused is the error the client is refused with; nil if it
		// connects.
		refused any
	}{
		{name: "each server its own address", data: []string{"127.0.0.1"}, sentinels: []string{"127.0.0.1"},
			host: "127.0.0.1", failover: true},
		{name: "one certificate naming the URL's host", data: []string{"localhost"}, sentinels: []string{"localhost"},
			host: "localhost"},
		{name: "a sentinel certificate naming another host", data: []string{"127.0.0.1", "localhost"},
			sentinels: []string{"redis.example"}, host: "localhost", refused: new(x509.HostnameError)},
		{name: "a sentinel certificate of another CA", data: []string{"127.0.0.1", "localhost"},
			sentinels: []string{"127.0.0.1", "localhost"}, otherCA: true, host: "localhost",
			refused: new(x509.UnknownAuthorityError)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ca := testcert.NewCA(t, dir)
			cert, key := ca.Issue(t, dir, "data", tc.data...)
			data := &redisproc.TLS{CertFile: cert, KeyFile: key, CAFile: ca.File}
			cert, key = ca.Issue(t, dir, "sentinel", tc.sentinels...)
			sentinels := &redisproc.TLS{CertFile: cert, KeyFile: key, CAFile: ca.File}
			if tc.otherCA {
				otherDir := t.TempDir()
				other := testcert.NewCA(t, otherDir)
				sentinels.CertFile, sentinels.KeyFile = other.Issue(t, otherDir, "sentinel", tc.sentinels...)
				bundle := testcert.Bundle(t, filepath.Join(dir, "bundle.crt"), ca, other)
				data.CAFile, sentinels.CAFile = bundle, bundle
			}
			s := redistest.StartSentinel(t, redistest.SentinelOptions{TLS: data, SentinelTLS: sentinels})
			opt, err := ParseURL(sentinelURL(s, tc.host, ""))
			require.NoError(t, err)
			opt.TLSConfig.RootCAs = ca.Pool()
			opt.DisableCache = true
			client, err := rueidis.NewClient(opt)
			if tc.refused != nil {
				t.Logf("refused: %v", err)
				require.Error(t, err)
				assert.ErrorAs(t, err, new(*tls.CertificateVerificationError))
				assert.ErrorAs(t, err, tc.refused)
				return
			}
			require.NoError(t, err)
			defer client.Close()
			assert.Equal(t, rueidis.ClientModeSentinel, client.Mode())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, client.Do(ctx, client.B().Set().Key("k").Value("v").Build()).Error())
			if !tc.failover {
				return
			}
			first, err := s.Primary()
			require.NoError(t, err)
			first.Kill()
			next, err := s.WaitFailover(first)
			require.NoError(t, err)
			// The client hears of the new primary from a sentinel, over
			// TLS, and writes to it.
			for {
				err = client.Do(ctx, client.B().Set().Key("k").Value("after").Build()).Error()
				if err == nil {
					break
				}
				require.NoError(t, ctx.Err(), "the client never wrote to the new primary: %v", err)
				time.Sleep(50 * time.Millisecond)
			}
			v, err := next.DoString("GET", "k")
			require.NoError(t, err)
			assert.Equal(t, "after", v)
		})
	}
}

// TestParseURLSentinelPassword reaches, over TLS, a primary and sentinels
// that each require a password of their own: the URL's userinfo is the
// primary's, sentinel_username and sentinel_password the sentinels'. A
// refusal's hint says where each goes.
func TestParseURLSentinelPassword(t *testing.T) {
	const dataPass, sentinelPass = "data-secret", "sentinel-secret"
	dir := t.TempDir()
	ca := testcert.NewCA(t, dir)
	cert, key := ca.Issue(t, dir, "node", "127.0.0.1")
	s := redistest.StartSentinel(t, redistest.SentinelOptions{
		TLS: &redisproc.TLS{CertFile: cert, KeyFile: key, CAFile: ca.File}})
	// Passwords on a running setup: the sentinels first learn the
	// primary's, and the replica its primary's.
	for _, sn := range s.Sentinels {
		_, err := sn.Do("SENTINEL", "SET", s.MasterName(), "auth-pass", dataPass)
		require.NoError(t, err)
	}
	_, err := s.Data[1].Do("CONFIG", "SET", "masterauth", dataPass)
	require.NoError(t, err)
	for _, n := range s.Data {
		_, err := n.Do("CONFIG", "SET", "requirepass", dataPass)
		require.NoError(t, err)
	}
	for _, sn := range s.Sentinels {
		_, err := sn.DoAll([]string{"SENTINEL", "CONFIG", "SET", "sentinel-pass", sentinelPass},
			[]string{"ACL", "SETUSER", "default", "resetpass", ">" + sentinelPass})
		require.NoError(t, err)
		_, err = sn.Do("SENTINEL", "MASTERS")
		require.ErrorContains(t, err, "NOAUTH", "the sentinel requires its password")
	}

	for _, tc := range []struct {
		name   string
		url    string
		ok     bool
		reason string // in the error of a refusal
	}{
		{name: "both passwords", ok: true,
			url: sentinelURL(s, "127.0.0.1", "&sentinel_password="+sentinelPass)},
		{name: "both passwords, the sentinels' user named", ok: true,
			url: sentinelURL(s, "127.0.0.1", "&sentinel_username=default&sentinel_password="+sentinelPass)},
		{name: "no sentinel password", reason: "NOAUTH", url: sentinelURL(s, "127.0.0.1", "")},
		{name: "the primary's password for the sentinels", reason: "WRONGPASS",
			url: sentinelURL(s, "127.0.0.1", "&sentinel_password="+dataPass)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := strings.Replace(tc.url, "rediss://", "rediss://:"+dataPass+"@", 1)
			opt, err := ParseURL(url)
			require.NoError(t, err)
			opt.TLSConfig.RootCAs = ca.Pool()
			opt.DisableCache = true
			client, err := rueidis.NewClient(opt)
			if !tc.ok {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.reason)
				assert.Contains(t, Hint(opt, err), "sentinel_password=<password>")
				return
			}
			require.NoError(t, err)
			defer client.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, client.Do(ctx, client.B().Set().Key("k").Value("v").Build()).Error())
		})
	}
}
