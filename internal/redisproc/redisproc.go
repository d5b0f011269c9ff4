// Package redisproc runs a throwaway redis-server process on a free
// loopback port, for the module's tests (through package redistest) and
// for the benchmark command. The server listens on 127.0.0.1 only, never
// on 6379, and keeps its files in a directory of its own; given TLS
// files, it listens on TLS only.
package redisproc

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// InstallHint says how to install redis-server; it is the text of
// ErrNotInstalled.
const InstallHint = "redis-server not found: install it with `apt-get install redis-server` (Debian) or `brew install redis`"

// ErrNotInstalled is returned by Start when redis-server is not on PATH.
var ErrNotInstalled = errors.New(InstallHint)

// ReservedPort is the port of a developer's own Redis, which a server
// started here never takes.
const ReservedPort = 6379

// StartTimeout bounds how long a server may take to answer PING, and how
// long Stop waits for it to exit before killing it.
const StartTimeout = 15 * time.Second

// Options configures a server. The zero value starts a server without
// persistence in a new temporary directory.
type Options struct {
	// Dir is the server's working directory, where its append-only file
	// and its log (redis.log) live; it must exist. Empty means a new
	// temporary directory, removed by Close.
	Dir string
	// AppendOnly turns the append-only file on, so that data survives
	// Restart.
	AppendOnly bool
	// AppendFsync is the appendfsync policy when AppendOnly is set:
	// "always", "everysec" or "no". Empty means "everysec".
	AppendFsync string
	// Args are extra command-line arguments, appended last so that they
	// override the defaults (for example "--maxmemory", "10mb").
	Args []string
	// Config, when not empty, is written to a file in Dir that the server
	// reads before its command-line arguments (a Sentinel needs a config
	// file it can rewrite).
	Config string
	// Sentinel runs the server as a Redis Sentinel (--sentinel); Config
	// then holds its "sentinel monitor" lines.
	Sentinel bool
	// ClusterBus, when set, runs the server with cluster mode on and its
	// cluster bus on a free port of its own (not port+10000, which may be
	// taken).
	ClusterBus bool
	// TLS, when set, has the server listen on TLS only: its port is a
	// tls-port, the plain one is off (port 0), and the connections it
	// makes itself (a replica's to its primary, a sentinel's to the
	// servers it watches and to the other sentinels) are TLS too
	// (tls-replication). Clients need no certificate of their own. The
	// package's own connections to it (Server.Do) are TLS then.
	TLS *TLS
}

// TLS names the files of a server that listens on TLS.
type TLS struct {
	// CertFile and KeyFile are the server's certificate and its key
	// (tls-cert-file, tls-key-file), which it also presents as a client.
	CertFile, KeyFile string
	// CAFile holds the CAs the server trusts (tls-ca-cert-file): the
	// certificates of the servers it connects to must chain to one.
	CAFile string
}

// args returns the server arguments that have it listen on port over TLS
// only.
func (t *TLS) args(port int) []string { return append([]string{"--port", "0"}, t.listenArgs(port)...) }

// clusterArgs returns the arguments of a cluster node that listens on
// port over TLS as well as on its plain port (see ClusterOptions.TLS).
func (t *TLS) clusterArgs(port int) []string {
	return append(t.listenArgs(port), "--tls-cluster", "yes",
		// A node alone does not know its address, and a client takes
		// the one it dialed for it; told, it announces it.
		"--cluster-announce-ip", "127.0.0.1")
}

// listenArgs returns the arguments that have a server listen on port
// over TLS with t's files, and replicate over TLS.
func (t *TLS) listenArgs(port int) []string {
	return []string{"--tls-port", strconv.Itoa(port),
		"--tls-cert-file", t.CertFile, "--tls-key-file", t.KeyFile, "--tls-ca-cert-file", t.CAFile,
		"--tls-auth-clients", "no", "--tls-replication", "yes"}
}

// clientConfig returns the config of the package's own connections to a
// server with these files: its certificate must chain to CAFile. Its
// names are not checked: the package dials a process it started, on the
// loopback address, whose process id it checks (a test may well give a
// server a certificate that names another host, to see a client refuse
// it).
func (t *TLS) clientConfig() (*tls.Config, error) {
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("redisproc: read the CA file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("redisproc: no certificate in %s", t.CAFile)
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // the chain is checked below, the names are not
		VerifyConnection: func(cs tls.ConnectionState) error {
			certs := cs.PeerCertificates
			if len(certs) == 0 {
				return errors.New("redisproc: the server sent no certificate")
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, c := range certs[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := certs[0].Verify(opts)
			return err
		},
	}, nil
}

// configFile is the name of the file Options.Config is written to.
const configFile = "redis.conf"

// Server is a redis-server process. Its methods are safe for concurrent
// use.
type Server struct {
	bin     string
	dir     string
	ownsDir bool
	port    int
	busPort int // the cluster bus's, with Options.ClusterBus
	args    []string
	tls     *tls.Config // the config of Do's connections, with Options.TLS

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc has exited
}

// Start starts a redis-server configured by opts on a free port and waits
// until it answers PING. It returns an error wrapping ErrNotInstalled when
// redis-server is missing.
func Start(opts Options) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNotInstalled
	}
	s := &Server{bin: bin, dir: opts.Dir}
	if opts.TLS != nil {
		if s.tls, err = opts.TLS.clientConfig(); err != nil {
			return nil, err
		}
	}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "redisproc-"); err != nil {
			return nil, fmt.Errorf("redisproc: make a directory: %w", err)
		}
		s.ownsDir = true
	}
	if opts.Config != "" {
		if err := os.WriteFile(filepath.Join(s.dir, configFile), []byte(opts.Config), 0o600); err != nil {
			s.removeDir()
			return nil, fmt.Errorf("redisproc: write the config file: %w", err)
		}
	}
	var lastErr error
	for range 5 {
		port, err := FreePort()
		if err != nil {
			s.removeDir()
			return nil, fmt.Errorf("redisproc: find a free port: %w", err)
		}
		s.port = port
		o := opts
		if o.ClusterBus {
			bus, err := FreePort()
			if err != nil {
				s.removeDir()
				return nil, fmt.Errorf("redisproc: find a free port: %w", err)
			}
			s.busPort = bus
			o.Args = append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-port", strconv.Itoa(bus)}, o.Args...)
		}
		s.args = Args(port, s.dir, o)
		if lastErr = s.launch(); lastErr == nil {
			return s, nil
		}
		// Another process may have taken the port between our probe and
		// the server's bind: try another one.
	}
	s.removeDir()
	return nil, fmt.Errorf("redisproc: start redis-server: %w", lastErr)
}

// Args returns the command-line arguments of a server on port with its
// files in dir: the config file and --sentinel if opts ask for them,
// loopback only, no RDB snapshots, replicas served without delay, the
// append-only file as opts says, TLS only if opts.TLS is set (port then
// being its tls-port), then opts.Args.
func Args(port int, dir string, opts Options) []string {
	var args []string
	if opts.Config != "" {
		args = append(args, filepath.Join(dir, configFile))
	}
	if opts.Sentinel {
		args = append(args, "--sentinel")
	}
	if opts.TLS != nil {
		args = append(args, opts.TLS.args(port)...)
	} else {
		args = append(args, "--port", strconv.Itoa(port))
	}
	args = append(args,
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--logfile", "redis.log",
		"--daemonize", "no",
		"--save", "",
		// A replica is served at once, not after the five seconds a
		// primary waits by default for more replicas to sync with.
		"--repl-diskless-sync-delay", "0",
	)
	if opts.AppendOnly {
		fsync := opts.AppendFsync
		if fsync == "" {
			fsync = "everysec"
		}
		args = append(args, "--appendonly", "yes", "--appendfsync", fsync)
	} else {
		args = append(args, "--appendonly", "no")
	}
	return append(args, opts.Args...)
}

// FreePort asks the kernel for a free port on the loopback interface,
// avoiding ReservedPort.
func FreePort() (int, error) {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, err
		}
		if port != ReservedPort {
			return port, nil
		}
	}
}

// launch starts the process on s.port and waits until it answers PING.
// A server that answers and is not the process started (another one that
// took the port between FreePort's probe and this one's bind, so that
// this one exits) is an error: the process is killed.
func (s *Server) launch() error {
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.proc, s.done = cmd, done
	s.mu.Unlock()

	deadline := time.Now().Add(StartTimeout)
	for {
		err := s.Ping()
		if err == nil {
			if err = s.answersAs(cmd.Process.Pid); err == nil {
				return nil
			}
			s.signal(true)
			<-done
			return err
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server exited at start (port %d): %s", s.port, s.LogTail(10))
		default:
		}
		if time.Now().After(deadline) {
			s.signal(true)
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %w", s.port, StartTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answersAs checks that the server answering on s's port is the process
// pid (INFO's process_id).
func (s *Server) answersAs(pid int) error {
	info, err := s.DoString("INFO", "server")
	if err != nil {
		return fmt.Errorf("INFO server on port %d: %w", s.port, err)
	}
	if got := infoField(info, "process_id"); got != strconv.Itoa(pid) {
		return fmt.Errorf("port %d is another process's (pid %s, not %d)", s.port, got, pid)
	}
	return nil
}

// Ping sends one inline PING to addr and expects +PONG (a server still
// loading its append-only file answers -LOADING, which counts as not
// ready).
func Ping(addr string) error { return ping(addr, nil) }

// Ping is the package's Ping of the server, over TLS for a server
// started with Options.TLS.
func (s *Server) Ping() error { return ping(s.Addr(), s.tls) }

// ping is Ping over TLS with config, or plain TCP if config is nil.
func ping(addr string, config *tls.Config) error {
	conn, err := dial(addr, config)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns the server's address as a redis:// URL (rediss:// for a
// server started with Options.TLS), the form REDIS_URL takes.
func (s *Server) URL() string { return s.scheme() + "://" + s.Addr() + "/0" }

// scheme returns the scheme of the server's URLs: rediss over TLS, redis
// otherwise.
func (s *Server) scheme() string {
	if s.tls != nil {
		return "rediss"
	}
	return "redis"
}

// TLS reports whether the server listens on TLS only (Options.TLS).
func (s *Server) TLS() bool { return s.tls != nil }

// Port returns the server's port.
func (s *Server) Port() int { return s.port }

// BusPort returns the port of the server's cluster bus, or 0 for a server
// started without Options.ClusterBus.
func (s *Server) BusPort() int { return s.busPort }

// Dir returns the server's working directory.
func (s *Server) Dir() string { return s.dir }

// Running reports whether the server process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Stop shuts the server down gracefully (SIGTERM: an append-only file is
// flushed) and waits for it to exit, killing it if that takes longer than
// StartTimeout. Stopping a stopped server does nothing.
func (s *Server) Stop() { s.stop(false) }

// Kill ends the server with SIGKILL, as a crash would, and waits for it to
// exit. Writes not yet fsynced to the append-only file are lost.
func (s *Server) Kill() { s.stop(true) }

// Close kills the server and removes its directory if Start made it.
func (s *Server) Close() {
	s.Kill()
	s.removeDir()
}

func (s *Server) removeDir() {
	if s.ownsDir {
		_ = os.RemoveAll(s.dir)
	}
}

func (s *Server) stop(kill bool) {
	if !s.signal(kill) {
		return
	}
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	select {
	case <-done:
	case <-time.After(StartTimeout):
		s.signal(true)
		<-done
	}
}

// signal sends SIGTERM (or SIGKILL) to a running process and reports
// whether there was one.
func (s *Server) signal(kill bool) bool {
	s.mu.Lock()
	proc, done := s.proc, s.done
	s.mu.Unlock()
	if proc == nil || proc.Process == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
	}
	if kill {
		_ = proc.Process.Kill()
	} else {
		_ = proc.Process.Signal(terminateSignal)
	}
	return true
}

// Restart stops the server if it is running and starts it again on the
// same port and in the same directory, so that an append-only file is
// replayed. It retries for a few seconds while the port is still taken.
func (s *Server) Restart() error {
	s.Stop()
	var err error
	for range 50 {
		if err = s.launch(); err == nil {
			return nil
		}
		// The old socket may linger or another process may hold the port
		// for a moment: try again shortly.
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("redisproc: restart redis-server on port %d: %w", s.port, err)
}

// Freeze stops the server process (SIGSTOP) until resume is called
// (SIGCONT): its connections stay open and nothing is answered or
// replicated, as with a server stuck or a network that drops packets.
func (s *Server) Freeze() (resume func(), err error) {
	s.mu.Lock()
	proc := s.proc
	s.mu.Unlock()
	if proc == nil || proc.Process == nil || freezeSignals[0] == 0 {
		return nil, errors.New("redisproc: no process to freeze")
	}
	if err := proc.Process.Signal(freezeSignals[0]); err != nil {
		return nil, fmt.Errorf("redisproc: freeze: %w", err)
	}
	var once sync.Once
	return func() { once.Do(func() { _ = proc.Process.Signal(freezeSignals[1]) }) }, nil
}

// RestartWith is Restart with extra command-line arguments appended to
// the server's, for this start and the later ones (for example
// "--replicaof", host, port: a failed primary that comes back as a
// replica of its successor).
func (s *Server) RestartWith(extra ...string) error {
	s.Stop()
	s.mu.Lock()
	s.args = append(slices.Clip(s.args), extra...)
	s.mu.Unlock()
	return s.Restart()
}

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return tail(string(b), n)
}
