// Package pghistory keeps the history of finished tasks in PostgreSQL: one
// row per task, with its inputs, final snapshot, timings, attempts, flow
// and owner, kept for as long as the database keeps it, long after Redis'
// retention has dropped the task.
//
// It is a module of its own (github.com/flowsrun/flows/pghistory), so that
// a program that does not keep a history never downloads the PostgreSQL
// driver (github.com/jackc/pgx/v5).
//
// # Writing
//
// Open connects and creates or updates the table (embedded migrations,
// each run once however many processes start at once). Store.Hook is a
// queue.FinishHook: set it in queue.WorkerConfig.OnFinish and every worker
// writes each task it ends, after the terminal state is recorded and
// before the task is acknowledged:
//
//	history, err := pghistory.Open(ctx, os.Getenv("DATABASE_URL"), pghistory.Config{})
//	if err != nil { ... }
//	defer history.Close()
//	worker := queue.NewWorker(backend, nil, queue.WorkerConfig{OnFinish: []queue.FinishHook{history.Hook}})
//
// A task's hooks run at least once (again when a worker dies between
// recording the end and acknowledging it); Save writes a task's row once
// and ignores later writes of the same task, so the table holds exactly
// one row per task. Hook tries again while the database cannot be
// reached, for as long as the worker gives its hooks
// (queue.WorkerConfig.FinishHookTimeout): a restart of PostgreSQL loses
// no row; an outage longer than that loses the rows of the tasks that
// ended meanwhile.
//
// # Reading
//
// Store.List returns finished tasks newest first (by the time they ended),
// filtered by flow, state, owner and a time range, a page at a time with
// an opaque cursor; Store.Get returns one task's row:
//
//	page, err := history.List(ctx, pghistory.Query{Flow: "poem_flow", State: progress.StateFailure, Limit: 20})
//	for _, r := range page.Records { ... }
//	next, err := history.List(ctx, pghistory.Query{Flow: "poem_flow", State: progress.StateFailure, Limit: 20, Cursor: page.Next})
//
// Every filter and the order are served by an index, so a page costs the
// same however long the history is.
//
// A Store is also a queue.History (ListHistory): with it in
// queue.InspectorConfig.History, an Inspector lists the history with
// the backend's tasks, in one order, past the backend's retention. So
// that both sort alike, Save keeps a row's times to the millisecond, as
// the Redis backend does.
package pghistory

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flowsrun/flows/queue"
)

// Errors of the package; check them with errors.Is.
var (
	// ErrNotFound: no finished task with that id in the history.
	ErrNotFound = errors.New("pghistory: task not found")
	// ErrBadCursor: a Query.Cursor that List did not make.
	ErrBadCursor = errors.New("pghistory: malformed cursor")
	// ErrInvalidRecord: a Record that Save refuses (see Save).
	ErrInvalidRecord = errors.New("pghistory: invalid record")
)

// Config configures a Store. The zero value is usable.
type Config struct {
	// Logger receives the Store's warnings. Nil means slog.Default().
	Logger *slog.Logger
}

// Store reads and writes the history table. It is safe for concurrent
// use.
type Store struct {
	pool *pgxpool.Pool
	own  bool // Close closes the pool
	log  *slog.Logger
	// waiting is set while a Hook waits for the database, away once one
	// waited all of its time in vain, until a Save succeeds (see Hook).
	waiting, away atomic.Bool
}

// Open connects to the database at url (a postgres:// URL or a libpq
// key=value string, as DATABASE_URL usually holds), creates or updates the
// history table, and returns a Store that owns the connections: Close
// closes them. It fails if the database cannot be reached.
func Open(ctx context.Context, url string, cfg Config) (*Store, error) {
	if url == "" {
		return nil, errors.New("pghistory: empty database URL")
	}
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The URL may hold a password: the parser's message is not
		// repeated.
		return nil, errors.New("pghistory: the database URL cannot be parsed")
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("pghistory: connect: %w", err)
	}
	s, err := New(ctx, pool, cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.own = true
	return s, nil
}

// New returns a Store on pool, after creating or updating the history
// table. Close does not close pool.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		panic("pghistory.New: nil pool")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Store{pool: pool, log: cfg.Logger}
	if err := s.Migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the Store's connections if Open made them.
func (s *Store) Close() {
	if s.own {
		s.pool.Close()
	}
}

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the key of the advisory lock that serializes
// migrations of concurrent processes.
const migrationLock = 0x666c6f7773 // "flows"

// Migrate creates or updates the history table: it runs, in order, the
// embedded migrations (migrations/NNN_name.sql) that the database has not
// run yet, recording each in the flows_history_migrations table, all in
// one transaction under an advisory lock, so that processes starting at
// once run each migration once. Open and New call it.
func (s *Store) Migrate(ctx context.Context) error {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("pghistory: migrations: %w", err)
	}
	slices.Sort(files)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return s.wrap("migrate", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrationLock)); err != nil {
		return s.wrap("migrate", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS flows_history_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return s.wrap("migrate", err)
	}
	rows, err := tx.Query(ctx, "SELECT version FROM flows_history_migrations")
	if err != nil {
		return s.wrap("migrate", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return s.wrap("migrate", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".sql")
		num, _, _ := strings.Cut(name, "_")
		version, err := strconv.Atoi(num)
		if err != nil {
			return fmt.Errorf("pghistory: migration %s: the name does not start with its number", f)
		}
		if slices.Contains(done, int32(version)) {
			continue
		}
		sql, err := migrations.ReadFile(f)
		if err != nil {
			return fmt.Errorf("pghistory: migration %s: %w", f, err)
		}
		if _, err := tx.Exec(ctx, string(sql)); err != nil {
			return fmt.Errorf("pghistory: migration %s: %w", name, s.wrap("migrate", err))
		}
		if _, err := tx.Exec(ctx, "INSERT INTO flows_history_migrations (version, name) VALUES ($1, $2)", version, name); err != nil {
			return s.wrap("migrate", err)
		}
		s.log.Info("flows: history migration applied", "migration", name)
	}
	if err := tx.Commit(ctx); err != nil {
		return s.wrap("migrate", err)
	}
	return nil
}

// wrap adds op to err, and queue.ErrUnavailable when the database could
// not be reached (the HTTP layer answers that with 503).
func (s *Store) wrap(op string, err error) error {
	if unreachable(err) {
		return fmt.Errorf("pghistory: %s: %w: %w", op, queue.ErrUnavailable, err)
	}
	return fmt.Errorf("pghistory: %s: %w", op, err)
}

// unreachable reports whether err says that the database could not be
// reached or went away: no connection, a timeout, a connection cut in
// the middle of a statement (EOF), or the server ending it (SQLSTATE
// class 08, connection exception, and 57P01 to 57P03, a shutdown or a
// server not yet up).
func unreachable(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		return true
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return true
	case errors.As(err, &pe):
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	return false
}
