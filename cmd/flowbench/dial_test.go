package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistest"
)

// tlsURLEnv names, for the test binary run again by
// TestTLSClusterSharingOneCertificate, the REDIS_URL to run against.
const tlsURLEnv = "FLOWBENCH_TEST_TLS_URL"

// TestTLSClusterSharingOneCertificate runs flowbench over TLS against a
// one-node Redis Cluster that announces itself as 127.0.0.1 and whose
// certificate names only localhost, the URL's host: the connections
// flowbench benchmarks, dialed at the announced address, accept it, as
// redisform.ParseURL's do. The test binary runs again with the CA in
// SSL_CERT_FILE, which Go reads once per process.
func TestTLSClusterSharingOneCertificate(t *testing.T) {
	if url := os.Getenv(tlsURLEnv); url != "" {
		getenv := func(name string) string {
			if name == "REDIS_URL" {
				return url
			}
			return ""
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var out bytes.Buffer
		err := run(ctx, []string{"-quick", "-scenario", "roundtrips"}, getenv, &out)
		require.NoError(t, err, "output so far:\n%s", out.String())
		assert.Contains(t, out.String(), "at REDIS_URL")
		return
	}
	dir := t.TempDir()
	writeTestCerts(t, dir, "localhost")
	tlsPort, err := redisproc.FreePort()
	require.NoError(t, err)
	redistest.StartCluster(t, redistest.ClusterOptions{Masters: 1, Args: []string{
		"--tls-port", strconv.Itoa(tlsPort), "--tls-cluster", "yes", "--tls-auth-clients", "no",
		"--tls-cert-file", filepath.Join(dir, "node.crt"), "--tls-key-file", filepath.Join(dir, "node.key"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.crt"),
		"--cluster-announce-ip", "127.0.0.1",
	}})
	cmd := exec.Command(os.Args[0], "-test.run=^TestTLSClusterSharingOneCertificate$", "-test.v")
	cmd.Env = append(os.Environ(), tlsURLEnv+"=rediss://localhost:"+strconv.Itoa(tlsPort),
		"SSL_CERT_FILE="+filepath.Join(dir, "ca.crt"), "SSL_CERT_DIR="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("flowbench over TLS:\n%s", out)
	require.NoError(t, err)
}

// TestUnixSocketURL runs flowbench against a Redis at a unix:// URL:
// the connections it benchmarks dial the socket, as the URL's options
// say, not TCP.
func TestUnixSocketURL(t *testing.T) {
	dir, err := os.MkdirTemp("", "fb") // short: a socket's path is limited
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "redis.sock")
	redistest.StartWith(t, redistest.Options{Args: []string{"--unixsocket", sock, "--unixsocketperm", "700"}})
	getenv := func(name string) string {
		if name == "REDIS_URL" {
			return "unix://" + sock
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err = run(ctx, []string{"-quick", "-scenario", "roundtrips"}, getenv, &out)
	require.NoError(t, err, "output so far:\n%s", out.String())
	assert.Contains(t, out.String(), "at REDIS_URL")
}

// writeTestCerts writes to dir a CA (ca.crt) and a server certificate it
// signed (node.crt, node.key) for the DNS names given.
func writeTestCerts(t *testing.T, dir string, names ...string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flowbench test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, DNSNames: names,
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
}
