package redistest

import (
	"crypto/x509"
	"path/filepath"
	"testing"

	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/testcert"
)

// NewTLS writes to dir a new CA and a certificate it signs for names
// (see testcert.Write), and returns them as the files of servers that
// listen on TLS (ClusterOptions.TLS, SentinelOptions.TLS), and the pool
// of roots holding the CA, which a client trusts.
func NewTLS(tb testing.TB, dir string, names ...string) (*redisproc.TLS, *x509.CertPool) {
	tb.Helper()
	roots := testcert.Write(tb, dir, names...)
	return &redisproc.TLS{
		CertFile: filepath.Join(dir, "node.crt"), KeyFile: filepath.Join(dir, "node.key"), CAFile: filepath.Join(dir, "ca.crt"),
	}, roots
}
