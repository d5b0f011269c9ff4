package redisform

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistest"
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
	} {
		_, err := ParseURL(raw)
		require.Error(t, err, raw)
		assert.NotContains(t, err.Error(), pass)
		assert.NotContains(t, err.Error(), token)
	}
}

// TestParseURLServerName checks the TLS server name of the options: none
// (each connection verifies the host it dials), for one address or
// several, a cluster's or sentinels'; and no TLS for redis://.
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
	}
	opt, err := ParseURL("redis://node1.example:7000?addr=node2.example:7000")
	require.NoError(t, err)
	assert.Nil(t, opt.TLSConfig)
}

// TestParseURLVerifiesEachNode connects over TLS to a Redis Cluster whose
// node's certificate names 127.0.0.1 only, through a URL whose first
// address, 127.0.0.2, is down: a cluster URL lists several nodes so that
// any one of them will do. Each connection must verify the certificate
// against the host it dials, not against the URL's first one.
func TestParseURLVerifiesEachNode(t *testing.T) {
	dir := t.TempDir()
	ca := writeCerts(t, dir, net.ParseIP("127.0.0.1"))
	tlsPort, err := redisproc.FreePort()
	require.NoError(t, err)
	redistest.StartCluster(t, redistest.ClusterOptions{Masters: 1, Args: []string{
		"--tls-port", strconv.Itoa(tlsPort), "--tls-cluster", "yes", "--tls-auth-clients", "no",
		"--tls-cert-file", filepath.Join(dir, "node.crt"), "--tls-key-file", filepath.Join(dir, "node.key"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.crt"),
	}})
	down, err := redisproc.FreePort()
	require.NoError(t, err)

	opt, err := ParseURL("rediss://127.0.0.2:" + strconv.Itoa(down) + "?addr=127.0.0.1:" + strconv.Itoa(tlsPort))
	require.NoError(t, err)
	opt.TLSConfig.RootCAs = ca
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	defer client.Close()
	assert.Equal(t, rueidis.ClientModeCluster, client.Mode())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, client.Do(ctx, client.B().Set().Key("k").Value("v").Build()).Error())
}

// writeCerts writes to dir a CA (ca.crt) and a server certificate it
// signed (node.crt, node.key) that names ip only, and returns a pool
// holding the CA.
func writeCerts(t *testing.T, dir string, ip net.IP) *x509.CertPool {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redisform test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip.String()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{ip}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	for name, block := range map[string]*pem.Block{
		"ca.crt":   {Type: "CERTIFICATE", Bytes: caDER},
		"node.crt": {Type: "CERTIFICATE", Bytes: der},
		"node.key": {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600))
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}
