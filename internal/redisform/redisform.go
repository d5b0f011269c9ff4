// Package redisform reads a Redis URL (REDIS_URL) into client options
// (ParseURL: rueidis.ParseURL, with its errors' credentials masked, each
// TLS connection accepting a certificate valid for the host it dials or
// for the URL's, and a Sentinel setup's sentinels dialed as its primary
// is, over TLS with rediss://, with credentials of their own), and tells
// one that
// names a Redis Sentinel setup in a form that does not reach its
// primary: a sentinel without master_set, which rueidis takes for a
// Redis (given one address) or for cluster nodes (given several), and
// master_set on a server that is no sentinel. The example server and
// worker, the flows command and flowbench read their URLs with it; all
// but flowbench check their connections with it too, so that such a URL
// stops them with an error that says what to change in it, rather than
// with a refusal of one of the backend's commands.
package redisform

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/internal/redact"
)

// NameTheMaster says how a Redis URL names a primary through its
// sentinels.
const NameTheMaster = "name the master the sentinels watch with master_set=<name> in REDIS_URL " +
	"(redis://sentinel1:26379?addr=sentinel2:26379&master_set=mymaster)"

// ErrSentinel is the error of Check: the URL names a sentinel without
// master_set.
var ErrSentinel = errors.New("it is a Redis Sentinel, which holds no data: " + NameTheMaster)

// Check returns ErrSentinel if client, connected with opt, talks to a
// Redis Sentinel itself (no master_set, and INFO server says
// redis_mode:sentinel), nil otherwise. A server that refuses INFO is
// taken for a Redis.
func Check(client rueidis.Client, opt rueidis.ClientOption) error {
	if opt.Sentinel.MasterSet != "" || client.Mode() != rueidis.ClientModeStandalone {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := client.Do(ctx, client.B().Info().Section("server").Build()).ToString()
	if err == nil && strings.Contains(info, "redis_mode:sentinel") {
		return ErrSentinel
	}
	return nil
}

// Hint returns what to change in the URL when err, rueidis.NewClient's
// refusal to connect with opt, comes of naming sentinels as cluster
// nodes or a Redis as a sentinel, or of credentials refused (NOAUTH,
// WRONGPASS) by the sentinels or the primary of a Sentinel setup, as a
// clause to append to the error ("; ..."); "" otherwise.
func Hint(opt rueidis.ClientOption, err error) string {
	re, ok := rueidis.IsRedisErr(err)
	if !ok {
		return ""
	}
	switch msg := re.Error(); {
	case opt.Sentinel.MasterSet == "" && strings.Contains(msg, "unknown command 'CLUSTER'"):
		// Given several addresses, rueidis takes them for cluster nodes.
		return "; if these are Redis Sentinels, " + NameTheMaster
	case opt.Sentinel.MasterSet != "" && strings.Contains(msg, "unknown command 'SENTINEL'"):
		return "; it is not a Redis Sentinel: drop master_set from REDIS_URL to use it directly, or name the sentinels"
	case opt.Sentinel.MasterSet != "" && (strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "WRONGPASS")):
		// The sentinels' or the primary's: rueidis does not say which.
		return "; the sentinels' password goes in sentinel_password=<password> (their user in sentinel_username=) " +
			"in REDIS_URL, the primary's in its userinfo (redis://user:password@sentinel1:26379?...)"
	}
	return ""
}

// ParseURL returns the client options raw names, as rueidis.ParseURL
// reads them, but for these things:
//
//   - Its error keeps raw's credentials out (redact): url.Parse's error,
//     which rueidis.ParseURL returns, quotes the whole URL, password
//     included, and a mistyped URL's error is the one most likely to be
//     logged.
//   - Over TLS (rediss://), a server's certificate must chain to
//     TLSConfig.RootCAs (the system's roots when nil) and be valid for
//     either the host the connection dials or the URL's first host, the
//     name the user chose to trust; a certificate valid for neither, or
//     of another CA, is refused, and in FIPS 140-3 mode a chain holding
//     a key that is not FIPS-approved, as crypto/tls refuses it there. rueidis dials every node of a Redis
//     Cluster, and the primary it finds through sentinels, at the address
//     the cluster or the sentinels announce (an IP address unless Redis
//     is told otherwise), with one tls.Config, whose ServerName
//     rueidis.ParseURL sets to the URL's first host: checked against that
//     name only, a node whose certificate names only itself is refused;
//     checked against the dialed address only, nodes sharing one
//     certificate that names the URL's DNS name are. Both pass here.
//   - With master_set, the sentinels are dialed as the primary is: over
//     TLS with rediss://, their certificates checked as above (the
//     sentinels named in the URL at the hosts it gives, the others at
//     the addresses the sentinels announce), where rueidis.ParseURL
//     leaves them plain TCP; Sentinel.TLSConfig is TLSConfig itself, so
//     that a setting made on either after ParseURL holds for both.
//     Sentinel.Dialer is Dialer (dial_timeout), and Sentinel.Username
//     and Sentinel.Password are the query parameters sentinel_username
//     and sentinel_password, the credentials the sentinels require; the
//     URL's userinfo stays the primary's (and its replicas'), as
//     rueidis.ParseURL reads it. Given either parameter, a URL without
//     master_set is an error.
//
// TLSConfig.ServerName is left empty, so each connection sends the host
// it dials as its server name (SNI), as crypto/tls does. The check is
// made by the DialCtxFn returned, which must be kept: a caller that
// replaces it gets crypto/tls's own check, against the dialed host only.
// A caller that sets TLSConfig.ServerName (a proxy's name, say) has every
// certificate checked against that name only, as crypto/tls does;
// skip_verify=true in the URL (InsecureSkipVerify) checks none. A
// VerifyPeerCertificate or VerifyConnection set on TLSConfig runs after
// the check and is given the chains it verified. A caller that sets
// Sentinel.TLSConfig to nil dials the sentinels over plain TCP.
func ParseURL(raw string) (rueidis.ClientOption, error) {
	opt, err := rueidis.ParseURL(raw)
	if err != nil {
		return opt, redact.Error(err, redact.Secrets(raw)...)
	}
	if err := sentinelCredentials(raw, &opt); err != nil {
		return opt, err
	}
	if opt.TLSConfig != nil {
		opt.DialCtxFn = dialTLS(opt.TLSConfig.ServerName)
		opt.TLSConfig.ServerName = ""
	}
	if opt.Sentinel.MasterSet != "" {
		opt.Sentinel.TLSConfig = opt.TLSConfig
		opt.Sentinel.Dialer = opt.Dialer
	}
	return opt, nil
}

// sentinelCredentials sets opt.Sentinel's Username and Password to the
// query parameters sentinel_username and sentinel_password of raw, a URL
// rueidis.ParseURL read into opt (the first of each, as rueidis reads
// its parameters), and refuses them without master_set, where they would
// be ignored, or mistyped (a bad %-escape, which url.Values would drop).
func sentinelCredentials(raw string, opt *rueidis.ClientOption) error {
	u, err := url.Parse(raw)
	if err != nil { // rueidis.ParseURL parsed it
		return redact.Error(err, redact.Secrets(raw)...)
	}
	seen := map[string]bool{}
	for _, pair := range strings.Split(u.RawQuery, "&") {
		name, value, _ := strings.Cut(pair, "=")
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if name != "sentinel_username" && name != "sentinel_password" {
			continue
		}
		if value, err = url.QueryUnescape(value); err != nil {
			return fmt.Errorf("%s: %w", name, redact.Error(err, redact.Secrets(raw)...))
		}
		if opt.Sentinel.MasterSet == "" {
			return errors.New("sentinel_username and sentinel_password are the credentials of Redis Sentinels: " +
				"name the master they watch with master_set=<name>, or drop them")
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		if name == "sentinel_username" {
			opt.Sentinel.Username = value
		} else {
			opt.Sentinel.Password = value
		}
	}
	return nil
}

// dialTLS returns a rueidis DialCtxFn that dials dst as rueidis does, but
// over TLS, with a config that verifies the server's certificate (without
// a ServerName, InsecureSkipVerify off), checks it with eitherName: valid
// for the host of dst or for named, the URL's first host. rueidis calls
// it for the sentinels too, with Sentinel.TLSConfig. A config with a
// ServerName or with InsecureSkipVerify is used as it is; without a
// config (a caller's Sentinel.TLSConfig set to nil) the connection is
// plain TCP.
func dialTLS(named string) func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error) {
	return func(ctx context.Context, dst string, dialer *net.Dialer, config *tls.Config) (net.Conn, error) {
		if config == nil {
			return dialer.DialContext(ctx, "tcp", dst)
		}
		if config.ServerName == "" && !config.InsecureSkipVerify {
			config = eitherName(config, dialedHost(dst), named)
		}
		d := tls.Dialer{NetDialer: dialer, Config: config}
		return d.DialContext(ctx, "tcp", dst)
	}
}

// dialedHost returns the host of addr as crypto/tls takes it for the
// server name when none is set: all before the last colon (an IPv6
// address keeps its brackets, which x509 accepts).
func dialedHost(addr string) string {
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		return addr[:i]
	}
	return addr
}

// eitherName returns a copy of config that accepts a server certificate
// that chains to config.RootCAs (the system's roots when nil) at
// config.Time (time.Now when nil), through the intermediates the server
// sends, for TLS server authentication, in FIPS 140-3 mode through a
// chain of FIPS-approved keys only (as crypto/tls), and is valid for
// dialed or for named. crypto/tls checks one name only, so the copy turns its check off
// (InsecureSkipVerify) and makes this one in VerifyConnection, which
// crypto/tls calls on every handshake, resumed ones too. config's own
// VerifyPeerCertificate (on full handshakes, as crypto/tls calls it) and
// VerifyConnection run after, given the verified chains.
func eitherName(config *tls.Config, dialed, named string) *tls.Config {
	c := config.Clone()
	verifyPeer, verifyConn := config.VerifyPeerCertificate, config.VerifyConnection
	c.InsecureSkipVerify = true
	c.VerifyPeerCertificate = nil
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		certs := cs.PeerCertificates
		if len(certs) == 0 {
			return errors.New("tls: server sent no certificate")
		}
		now := time.Now()
		if c.Time != nil {
			now = c.Time()
		}
		opts := x509.VerifyOptions{Roots: c.RootCAs, CurrentTime: now, Intermediates: x509.NewCertPool()}
		for _, cert := range certs[1:] {
			opts.Intermediates.AddCert(cert)
		}
		chains, err := certs[0].Verify(opts)
		if err == nil {
			chains, err = fipsAllowedChains(chains)
		}
		if err == nil {
			err = verifyHostname(certs[0], dialed, named)
		}
		if err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
		}
		cs.VerifiedChains = chains
		if verifyPeer != nil && !cs.DidResume {
			raw := make([][]byte, len(certs))
			for i, cert := range certs {
				raw[i] = cert.Raw
			}
			if err := verifyPeer(raw, chains); err != nil {
				return err
			}
		}
		if verifyConn != nil {
			return verifyConn(cs)
		}
		return nil
	}
	return c
}

// fipsAllowedChains returns chains as crypto/tls keeps them in FIPS 140-3
// mode (GODEBUG=fips140=on or only), where it accepts a chain only if
// every certificate in it has a FIPS-approved key, and refuses the
// server if none is left: the rule of crypto/tls's
// isCertificateAllowedFIPS (Go 1.26), which its own check applies and
// InsecureSkipVerify turns off with it. Outside FIPS mode it returns
// chains as they are.
func fipsAllowedChains(chains [][]*x509.Certificate) ([][]*x509.Certificate, error) {
	if !fips140.Enabled() {
		return chains, nil
	}
	var allowed [][]*x509.Certificate
	for _, chain := range chains {
		ok := len(chain) > 0
		for _, cert := range chain {
			ok = ok && fipsAllowedKey(cert.PublicKey)
		}
		if ok {
			allowed = append(allowed, chain)
		}
	}
	if len(allowed) == 0 {
		return nil, errors.New("tls: no FIPS compatible certificate chains found")
	}
	return allowed, nil
}

// fipsAllowedKey reports whether key is one crypto/tls accepts in a
// certificate chain in FIPS 140-3 mode: RSA of 2048 bits or more, ECDSA
// on P-256, P-384 or P-521, or Ed25519.
func fipsAllowedKey(key any) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return k.N.BitLen() >= 2048
	case *ecdsa.PublicKey:
		return k.Curve == elliptic.P256() || k.Curve == elliptic.P384() || k.Curve == elliptic.P521()
	case ed25519.PublicKey:
		return true
	}
	return false
}

// verifyHostname returns nil if cert is valid for dialed or for named,
// and otherwise an error that names both and wraps dialed's (an
// x509.HostnameError).
func verifyHostname(cert *x509.Certificate, dialed, named string) error {
	err := cert.VerifyHostname(dialed)
	if err == nil || named == "" || named == dialed {
		return err
	}
	if cert.VerifyHostname(named) == nil {
		return nil
	}
	return fmt.Errorf("certificate valid neither for %s, the host dialed, nor for %s, the host the Redis URL names: %w", dialed, named, err)
}
