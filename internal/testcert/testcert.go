// Package testcert makes the TLS certificates of tests: a CA and the
// certificates it signs, written as the PEM files a redis-server reads
// (tls-cert-file, tls-key-file, tls-ca-cert-file), and the pool of roots
// a client trusts. Every certificate is valid from an hour ago to an hour
// from now, with a P-256 key.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority made for a test.
type CA struct {
	// File is the PEM file holding the CA's certificate.
	File string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// serial numbers the certificates made in one test binary.
var serial atomic.Int64

// NewCA makes a CA and writes its certificate to dir/ca.crt.
func NewCA(t testing.TB, dir string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcert: CA key: %v", err)
	}
	n := serial.Add(1)
	// A name of its own: crypto/x509 tells of a chain to a CA of the same
	// name whose signature does not match, which misleads.
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: "test CA " + strconv.FormatInt(n, 10)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testcert: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testcert: CA certificate: %v", err)
	}
	ca := &CA{File: filepath.Join(dir, "ca.crt"), cert: cert, key: key}
	writePEM(t, ca.File, "CERTIFICATE", der)
	return ca
}

// Pool returns a pool of roots holding the CA alone.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// Issue makes a certificate the CA signs for names (each an IP address or
// a DNS name, the first also the subject's common name), for server and
// client authentication (a Redis replica or sentinel presents its server
// certificate as a client's), writes it and its key to dir/base.crt and
// dir/base.key, and returns their paths.
func (ca *CA) Issue(t testing.TB, dir, base string, names ...string) (certFile, keyFile string) {
	t.Helper()
	if len(names) == 0 {
		t.Fatal("testcert: a certificate needs a name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcert: key: %v", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	for _, name := range names {
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testcert: certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testcert: key: %v", err)
	}
	certFile, keyFile = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

// Write writes to dir a new CA (ca.crt) and a certificate it signs for
// names (node.crt, node.key), and returns a pool holding the CA.
func Write(t testing.TB, dir string, names ...string) *x509.CertPool {
	t.Helper()
	ca := NewCA(t, dir)
	ca.Issue(t, dir, "node", names...)
	return ca.Pool()
}

// Bundle writes the certificates of cas to one PEM file, file, as a
// server that trusts several CAs reads them, and returns file.
func Bundle(t testing.TB, file string, cas ...*CA) string {
	t.Helper()
	var b []byte
	for _, ca := range cas {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatalf("testcert: %v", err)
	}
	return file
}

func writePEM(t testing.TB, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("testcert: %v", err)
	}
}
