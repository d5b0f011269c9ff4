package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIssue loads an issued certificate as a server does and checks it
// against the CA's pool: valid for its names, for server and client
// authentication, and for nothing else; a bundle holds both CAs.
func TestIssue(t *testing.T) {
	dir := t.TempDir()
	ca := NewCA(t, dir)
	certFile, keyFile := ca.Issue(t, dir, "node", "localhost", "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err = leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}})
		assert.NoError(t, err)
	}
	assert.NoError(t, leaf.VerifyHostname("localhost"))
	assert.NoError(t, leaf.VerifyHostname("127.0.0.1"))
	assert.Error(t, leaf.VerifyHostname("redis.example"))
	_, err = leaf.Verify(x509.VerifyOptions{Roots: NewCA(t, t.TempDir()).Pool()})
	assert.Error(t, err, "another CA's pool")

	other := NewCA(t, t.TempDir())
	b, err := os.ReadFile(Bundle(t, filepath.Join(dir, "bundle.crt"), ca, other))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(b))
	_, err = leaf.Verify(x509.VerifyOptions{Roots: pool})
	assert.NoError(t, err)
}
