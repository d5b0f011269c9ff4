// Package pgtest starts throwaway PostgreSQL servers for tests.
//
// A server is a cluster of its own, made by initdb in a new temporary
// directory and run by pg_ctl on a free port of 127.0.0.1, with no Unix
// socket; it never touches a PostgreSQL already running on the machine:
//
//	srv := pgtest.Start(t)       // stopped and removed when the test ends
//	url := srv.Database(t)       // a fresh, empty database on it
//
// The binaries are taken from $PG_BIN when set, else from the newest
// /usr/lib/postgresql/*/bin (Debian's postgresql package), else from
// PATH. A machine without them makes the test fail with a message saying
// how to install them; such tests never skip.
//
// initdb refuses to run as root: when the test runs as root, initdb and
// the server run as the postgres system user (which Debian's package
// creates), in a directory given to that user.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// InstallHint says how to install the binaries a Server needs.
const InstallHint = "PostgreSQL's initdb and pg_ctl were not found: install Debian's postgresql package " +
	"(apt-get install postgresql), or set PG_BIN to the directory that holds them"

// ErrNotInstalled is returned by StartProcess when initdb or pg_ctl
// cannot be found.
var ErrNotInstalled = errors.New("pgtest: " + InstallHint)

// superuser is the role initdb makes; it needs no password (trust on
// 127.0.0.1 only).
const superuser = "flows"

// Server is a PostgreSQL server started by StartProcess or Start.
type Server struct {
	dir  string // holds the cluster (data) and the log
	bin  string
	port int
	cred *syscall.Credential // the user the server runs as, nil for the current one
}

// Start starts a server and stops it, removing its files, when the test
// ends. It fails the test if the binaries are missing or the server does
// not start.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := StartProcess()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// StartProcess starts a server, for use outside a test (a TestMain that
// shares one server between tests); call Stop when done.
func StartProcess() (*Server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin}
	if os.Geteuid() == 0 {
		s.cred, err = postgresUser()
		if err != nil {
			return nil, err
		}
	}
	if s.dir, err = os.MkdirTemp("", "pgtest-"); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			_ = os.RemoveAll(s.dir)
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	if err := s.initdb(); err != nil {
		_ = os.RemoveAll(s.dir)
		return nil, err
	}
	// A free port may be taken between the check and the start: try a
	// few.
	for range 5 {
		if s.port, err = freePort(); err != nil {
			break
		}
		if err = s.start(); err == nil {
			return s, nil
		}
	}
	_ = os.RemoveAll(s.dir)
	return nil, err
}

// findBin returns the directory of initdb and pg_ctl.
func findBin() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "pg_ctl"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("PG_BIN"); dir != "" {
		if has(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("%w (PG_BIN=%s holds no initdb and pg_ctl)", ErrNotInstalled, dir)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", ErrNotInstalled
}

// version is the major version in a path .../postgresql/<version>/bin.
func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// postgresUser returns the credential of the postgres system user.
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, initdb must run as the postgres user, which does not exist "+
			"(Debian's postgresql package creates it): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: uid of postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: gid of postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// command returns a command running a binary of s as the server's user.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) initdb() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := s.command(ctx, "initdb", "-D", s.data(), "-U", superuser, "--auth=trust",
		"--no-sync", "--encoding=UTF8", "--locale=C").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %w: %s", err, out)
	}
	return nil
}

// start runs the server on s.port and waits until it answers.
func (s *Server) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := strings.Join([]string{
		"-c listen_addresses=127.0.0.1",
		"-c port=" + strconv.Itoa(s.port),
		"-c unix_socket_directories=''",
		// A test server keeps nothing worth a disk write.
		"-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
	}, " ")
	out, err := s.command(ctx, "pg_ctl", "start", "-w", "-t", "90", "-D", s.data(),
		"-l", filepath.Join(s.dir, "server.log"), "-o", opts).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		return fmt.Errorf("pgtest: pg_ctl start: %w: %s\n%s", err, out, log)
	}
	return nil
}

// Stop stops the server at once and removes its files.
func (s *Server) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = s.command(ctx, "pg_ctl", "stop", "-m", "immediate", "-w", "-D", s.data()).Run()
	_ = os.RemoveAll(s.dir)
}

// Halt stops the server and keeps its files: Resume starts it again.
// Its clients are disconnected at once and it refuses new connections,
// as a database that is down does. The stop is a fast shutdown, not a
// crash: a test server does not sync its writes (see start), which a
// crash would lose.
func (s *Server) Halt() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := s.command(ctx, "pg_ctl", "stop", "-m", "fast", "-w", "-D", s.data()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %w: %s", err, out)
	}
	return nil
}

// Resume starts a server that Halt stopped, on the same port, with its
// databases as they were, and waits until it answers.
func (s *Server) Resume() error { return s.start() }

// Port returns the server's port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// URL returns the URL of the server's postgres database, as the superuser.
func (s *Server) URL() string { return s.url("postgres") }

func (s *Server) url(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, s.port, db)
}

// Database makes a new empty database on the server and returns its URL;
// it is dropped when the test ends. Its collation is the cluster's: C,
// which orders text byte by byte.
func (s *Server) Database(tb testing.TB) string {
	tb.Helper()
	return s.database(tb, "")
}

// DatabaseICU is Database with the ICU collation of locale (such as
// "en-US") as the database's default, so that text sorts as many
// installations sort it (case and punctuation weighed after letters),
// not byte by byte: a test of what depends on the order of text runs on
// it. It needs a server built with ICU, as Debian's is; the machine
// needs no operating-system locale.
func (s *Server) DatabaseICU(tb testing.TB, locale string) string {
	tb.Helper()
	return s.database(tb, "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '"+strings.ReplaceAll(locale, "'", "''")+"'")
}

func (s *Server) database(tb testing.TB, options string) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.exec(ctx, strings.TrimSpace("CREATE DATABASE "+name+" "+options)); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = s.exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return s.url(name)
}

// exec runs one statement on the postgres database.
func (s *Server) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}
