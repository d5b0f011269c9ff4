package smtp_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"
)

// mailServer is a real SMTP server (github.com/emersion/go-smtp) on a free
// loopback port, keeping the messages it accepts.
type mailServer struct {
	srv  *gosmtp.Server
	addr string

	mu       sync.Mutex
	messages []receivedMail
	user     string // when set, AUTH PLAIN with user and pass is required
	pass     string
	authOK   int
	authBad  int
	rcptCode int // when set, every RCPT is refused with it
	sawTLS   []bool
}

// receivedMail is one message as the server took it.
type receivedMail struct {
	From string
	To   []string
	Data []byte
	TLS  bool // whether the session was encrypted
}

// serverOptions choose how a mailServer talks.
type serverOptions struct {
	// STARTTLS offers STARTTLS with cert.
	STARTTLS bool
	// ImplicitTLS serves TLS from the first byte with cert.
	ImplicitTLS bool
	// User and Pass require AUTH PLAIN.
	User, Pass string
	// AllowInsecureAuth allows AUTH without TLS.
	AllowInsecureAuth bool
}

// startMailServer starts a server and stops it when the test ends.
func startMailServer(t *testing.T, opts serverOptions, cert *tls.Certificate) *mailServer {
	t.Helper()
	ms := &mailServer{user: opts.User, pass: opts.Pass}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		_, isTLS := c.TLSConnectionState()
		return &mailSession{ms: ms, conn: c, tls: isTLS}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.AllowInsecureAuth = opts.AllowInsecureAuth
	var ln net.Listener
	var err error
	if opts.STARTTLS || opts.ImplicitTLS {
		require.NotNil(t, cert)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	if opts.ImplicitTLS {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", srv.TLSConfig)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	require.NoError(t, err)
	ms.srv, ms.addr = srv, ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ms
}

func (ms *mailServer) received() []receivedMail {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return append([]receivedMail(nil), ms.messages...)
}

func (ms *mailServer) auths() (ok, bad int) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.authOK, ms.authBad
}

// mailSession is one SMTP session.
type mailSession struct {
	ms     *mailServer
	conn   *gosmtp.Conn
	tls    bool
	authed bool
	cur    receivedMail
}

var errAuthRequired = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

func (s *mailSession) AuthMechanisms() []string {
	if s.ms.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *mailSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		s.ms.mu.Lock()
		defer s.ms.mu.Unlock()
		if username != s.ms.user || password != s.ms.pass {
			s.ms.authBad++
			return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.ms.authOK++
		s.authed = true
		return nil
	}), nil
}

func (s *mailSession) Mail(from string, _ *gosmtp.MailOptions) error {
	if s.ms.user != "" && !s.authed {
		return errAuthRequired
	}
	_, s.tls = s.conn.TLSConnectionState()
	s.cur = receivedMail{From: from, TLS: s.tls}
	return nil
}

func (s *mailSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.ms.mu.Lock()
	code := s.ms.rcptCode
	s.ms.mu.Unlock()
	if code != 0 {
		return &gosmtp.SMTPError{Code: code, EnhancedCode: gosmtp.EnhancedCode{code / 100, 1, 1}, Message: "Mailbox unavailable"}
	}
	s.cur.To = append(s.cur.To, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.Data = b
	s.ms.mu.Lock()
	s.ms.messages = append(s.ms.messages, s.cur)
	s.ms.mu.Unlock()
	return nil
}

func (s *mailSession) Reset()        { s.cur = receivedMail{} }
func (s *mailSession) Logout() error { return nil }

// selfSigned makes a certificate for 127.0.0.1 and localhost, and a pool
// that trusts it.
func selfSigned(t *testing.T) (*tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "flows test SMTP"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
