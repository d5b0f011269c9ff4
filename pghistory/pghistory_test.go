package pghistory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/leakcheck"
	"github.com/flowsrun/flows/pghistory"
	"github.com/flowsrun/flows/pghistory/pgtest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// server is the PostgreSQL of this package's tests, started by TestMain;
// each test makes a database of its own on it.
var server *pgtest.Server

func TestMain(m *testing.M) {
	srv, err := pgtest.StartProcess()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server = srv
	code := m.Run()
	srv.Stop()
	os.Exit(code)
}

// open returns a Store on a new database, closed when the test ends.
func open(t *testing.T) (*pghistory.Store, string) {
	t.Helper()
	return openURL(t, server.Database(t))
}

// openURL returns a Store on the database at url, closed when the test
// ends.
func openURL(t *testing.T, url string) (*pghistory.Store, string) {
	t.Helper()
	s, err := pghistory.Open(context.Background(), url, pghistory.Config{})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s, url
}

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// record returns a valid record of a new task that ended at t0+i seconds.
func record(i int) pghistory.Record {
	snap := progress.NewSnapshot()
	snap.State = progress.StateSuccess
	snap.Details.Status = "Completed"
	snap.Details.Progress = 100
	snap.Details.StepResults = []progress.StepResult{{Type: progress.StepLog, Message: "hello"}}
	snap.Details.FinalResult = json.RawMessage(`"done"`)
	return pghistory.Record{
		TaskID: queue.NewID(), Flow: "poem_flow", State: progress.StateSuccess, Status: "Completed",
		Inputs: json.RawMessage(`{"topic":"otters"}`), Snapshot: snap, Attempts: 1, MaxAttempts: 3,
		Worker: "w1", EnqueuedAt: t0.Add(time.Duration(i)*time.Second - 2*time.Second),
		StartedAt: t0.Add(time.Duration(i)*time.Second - time.Second), EndedAt: t0.Add(time.Duration(i) * time.Second),
	}
}

func TestMigrateOnceUnderConcurrentOpens(t *testing.T) {
	url := server.Database(t)
	baseline := runtime.NumGoroutine()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := pghistory.Open(ctx, url, pghistory.Config{})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	leakcheck.Settle(t, baseline, 10*time.Second) // closed stores keep nothing running
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM flows_history_migrations").Scan(&n))
	assert.Equal(t, len(migrationFiles(t)), n, "each migration recorded once")
}

// migrationFiles returns the names of the package's migrations, in order.
func migrationFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("migrations", "*.sql"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	sort.Strings(files)
	return files
}

// TestMigrateUpgradesFrom001: a database that a version with migration
// 001 only made (its table, a row in it, 001 recorded) is brought up to
// date by Open: the later migrations run once, the old row reads 0
// hand-backs, and new rows keep theirs. A table that has the hand_backs
// column already without 002 recorded (added by hand, say) upgrades too.
func TestMigrateUpgradesFrom001(t *testing.T) {
	files := migrationFiles(t)
	require.Equal(t, "001_task_history.sql", filepath.Base(files[0]))
	ctx := context.Background()

	for _, tc := range []struct {
		name  string
		extra string // run after 001, before Open
	}{
		{"as 001 left it", ""},
		{"column there already", "ALTER TABLE flows_task_history ADD COLUMN hand_backs integer NOT NULL DEFAULT 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, conn := pastDatabase(t, 1, tc.extra)
			old := record(0)
			snap, err := json.Marshal(old.Snapshot)
			require.NoError(t, err)
			_, err = conn.Exec(ctx, `INSERT INTO flows_task_history (task_id, flow, state, snapshot, attempts, max_attempts, ended_at)
				VALUES ($1, $2, $3, $4, 1, 3, $5)`, old.TaskID, old.Flow, string(old.State), string(snap), old.EndedAt)
			require.NoError(t, err)

			upgrade(t, conn, url)

			s, _ := openURL(t, url)
			got, err := s.Get(ctx, old.TaskID)
			require.NoError(t, err, "the row 001 held reads")
			assert.Equal(t, 1, got.Attempts)
			assert.Equal(t, 3, got.MaxAttempts)
			assert.Zero(t, got.HandBacks, "a row from before reads no hand-backs")
			assert.False(t, got.Resume, "nor resume")

			r := record(1)
			r.Attempts, r.MaxAttempts, r.HandBacks = 3, 2, 2
			require.NoError(t, s.Save(ctx, r))
			got, err = s.Get(ctx, r.TaskID)
			require.NoError(t, err)
			assert.Equal(t, 2, got.HandBacks)
			assert.Equal(t, 3, got.Attempts)
		})
	}
}

// TestMigrateUpgradesFrom002: a database that the previous migration set
// (001 and 002) made, with rows in its table, is brought up to date by
// Open: 003 runs once, the old rows read resume false and keep their
// hand-backs, and new rows keep their resume. A table that has the resume
// column already without 003 recorded upgrades too.
func TestMigrateUpgradesFrom002(t *testing.T) {
	files := migrationFiles(t)
	require.GreaterOrEqual(t, len(files), 3)
	require.Equal(t, "002_hand_backs.sql", filepath.Base(files[1]))
	require.Equal(t, "003_resume.sql", filepath.Base(files[2]))
	ctx := context.Background()

	for _, tc := range []struct {
		name  string
		extra string // run after 002, before Open
	}{
		{"as 002 left it", ""},
		{"column there already", "ALTER TABLE flows_task_history ADD COLUMN resume boolean NOT NULL DEFAULT false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, conn := pastDatabase(t, 2, tc.extra)
			// Rows as that version wrote them: a plain task, and one
			// re-queued from a dead task.
			var old []pghistory.Record
			for i := range 2 {
				r := record(i)
				r.HandBacks = i + 1
				if i == 1 {
					r.RequeuedFrom = old[0].TaskID
				}
				snap, err := json.Marshal(r.Snapshot)
				require.NoError(t, err)
				_, err = conn.Exec(ctx, `INSERT INTO flows_task_history
					(task_id, flow, state, snapshot, attempts, max_attempts, hand_backs, requeued_from, ended_at)
					VALUES ($1, $2, $3, $4, 1, 3, $5, $6, $7)`,
					r.TaskID, r.Flow, string(r.State), string(snap), r.HandBacks, r.RequeuedFrom, r.EndedAt)
				require.NoError(t, err)
				old = append(old, r)
			}

			upgrade(t, conn, url)

			s, _ := openURL(t, url)
			for _, o := range old {
				got, err := s.Get(ctx, o.TaskID)
				require.NoError(t, err, "a row 002 held reads")
				assert.False(t, got.Resume, "a row from before reads no resume")
				assert.Equal(t, o.HandBacks, got.HandBacks, "and keeps its hand-backs")
				assert.Equal(t, o.RequeuedFrom, got.RequeuedFrom)
			}

			r := record(2)
			r.RequeuedFrom, r.Resume = old[0].TaskID, true
			require.NoError(t, s.Save(ctx, r))
			got, err := s.Get(ctx, r.TaskID)
			require.NoError(t, err)
			assert.True(t, got.Resume)
			assert.Equal(t, old[0].TaskID, got.RequeuedFrom)
		})
	}
}

// TestMigrateUpgradesFrom003: rows written with microseconds before
// migration 004 (by a hook that had the worker's clock, by a Save of
// your own) are cut to the millisecond by Open, so that the history's
// order is a listing's (the end's millisecond, then the id, greatest
// first); rows without a fraction of a millisecond, and rows with no
// start, are left as they were.
func TestMigrateUpgradesFrom003(t *testing.T) {
	files := migrationFiles(t)
	require.GreaterOrEqual(t, len(files), 4)
	require.Equal(t, "004_millis.sql", filepath.Base(files[3]))
	ctx := context.Background()
	url, conn := pastDatabase(t, 3, "")
	// Three tasks that ended in one millisecond, in the order of their
	// ids, and one of a whole millisecond without a start.
	base := t0.Add(time.Millisecond)
	ids := []string{"a-task", "b-task", "c-task", "d-task"}
	ended := []time.Time{base.Add(100 * time.Microsecond), base.Add(500 * time.Microsecond), base.Add(900 * time.Microsecond), base}
	for i, id := range ids {
		r := record(0)
		snap, err := json.Marshal(r.Snapshot)
		require.NoError(t, err)
		var started any = base.Add(-time.Second + 300*time.Microsecond)
		if i == 3 {
			started = nil
		}
		_, err = conn.Exec(ctx, `INSERT INTO flows_task_history
			(task_id, flow, state, snapshot, attempts, max_attempts, enqueued_at, started_at, ended_at)
			VALUES ($1, $2, $3, $4, 1, 3, $5, $6, $7)`,
			id, r.Flow, string(r.State), string(snap), base.Add(-2*time.Second+700*time.Microsecond), started, ended[i])
		require.NoError(t, err)
	}

	upgrade(t, conn, url)

	s, _ := openURL(t, url)
	page, err := s.List(ctx, pghistory.Query{})
	require.NoError(t, err)
	var got []string
	for _, r := range page.Records {
		got = append(got, r.TaskID)
		assert.True(t, base.Equal(r.EndedAt), "%s ended at %v", r.TaskID, r.EndedAt)
		assert.True(t, base.Add(-2*time.Second).Equal(r.EnqueuedAt), "%s enqueued at %v", r.TaskID, r.EnqueuedAt)
		if r.TaskID != "d-task" {
			assert.True(t, base.Add(-time.Second).Equal(r.StartedAt), "%s started at %v", r.TaskID, r.StartedAt)
		} else {
			assert.True(t, r.StartedAt.IsZero())
		}
	}
	assert.Equal(t, []string{"d-task", "c-task", "b-task", "a-task"}, got, "one millisecond: by id, greatest first")
}

// pastDatabase returns a new database as Migrate left it when the first
// n migrations were all it had, with extra run after them unless empty,
// and a connection to it, closed when the test ends.
func pastDatabase(t *testing.T, n int, extra string) (string, *pgx.Conn) {
	t.Helper()
	url := server.Database(t)
	conn := migrateTo(t, url, n)
	if extra != "" {
		_, err := conn.Exec(context.Background(), extra)
		require.NoError(t, err)
	}
	return url, conn
}

// migrateTo brings the empty database at url where Migrate left it when
// the first n migrations were all it had, and returns a connection to
// it, closed when the test ends.
func migrateTo(t *testing.T, url string, n int) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.WithoutCancel(ctx)) })
	_, err = conn.Exec(ctx, `CREATE TABLE flows_history_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	files := migrationFiles(t)
	require.GreaterOrEqual(t, len(files), n)
	for i, f := range files[:n] {
		sql, err := os.ReadFile(f)
		require.NoError(t, err)
		_, err = conn.Exec(ctx, string(sql))
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "INSERT INTO flows_history_migrations (version, name) VALUES ($1, $2)",
			i+1, strings.TrimSuffix(filepath.Base(f), ".sql"))
		require.NoError(t, err)
	}
	return conn
}

// upgrade opens the database at url twice (the second Open finds nothing
// to do) and checks that every migration is recorded once.
func upgrade(t *testing.T, conn *pgx.Conn, url string) {
	t.Helper()
	ctx := context.Background()
	for range 2 {
		s, err := pghistory.Open(ctx, url, pghistory.Config{})
		require.NoError(t, err)
		s.Close()
	}
	rows, err := conn.Query(ctx, "SELECT version FROM flows_history_migrations ORDER BY version")
	require.NoError(t, err)
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	require.NoError(t, err)
	want := make([]int32, len(migrationFiles(t)))
	for i := range want {
		want[i] = int32(i + 1)
	}
	assert.Equal(t, want, versions, "every migration recorded once")
}

func TestSaveKeepsOneRowPerTask(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	r := record(0)
	r.Attempts, r.HandBacks = 3, 2 // two runs handed back, one counted
	require.NoError(t, s.Save(ctx, r))
	again := r
	again.Status, again.Attempts, again.HandBacks = "written again", 4, 3
	require.NoError(t, s.Save(ctx, again), "a second write of a task is not an error")

	got, err := s.Get(ctx, r.TaskID)
	require.NoError(t, err)
	assert.Equal(t, "Completed", got.Status, "the first row stands")
	assert.Equal(t, 3, got.Attempts)
	assert.Equal(t, r.Flow, got.Flow)
	assert.Equal(t, r.State, got.State)
	assert.JSONEq(t, string(r.Inputs), string(got.Inputs))
	assert.Equal(t, r.Snapshot, got.Snapshot)
	assert.Equal(t, r.MaxAttempts, got.MaxAttempts)
	assert.Equal(t, 2, got.HandBacks)
	assert.Equal(t, r.Worker, got.Worker)
	assert.True(t, r.EnqueuedAt.Equal(got.EnqueuedAt))
	assert.True(t, r.StartedAt.Equal(got.StartedAt))
	assert.True(t, r.EndedAt.Equal(got.EndedAt))
	assert.False(t, got.RecordedAt.IsZero())

	noStart := record(1)
	noStart.StartedAt, noStart.EnqueuedAt, noStart.Inputs = time.Time{}, time.Time{}, nil
	require.NoError(t, s.Save(ctx, noStart))
	got, err = s.Get(ctx, noStart.TaskID)
	require.NoError(t, err)
	assert.True(t, got.StartedAt.IsZero(), "a task that never ran has no start")
	assert.True(t, got.EnqueuedAt.IsZero())
	assert.JSONEq(t, `{}`, string(got.Inputs))

	_, err = s.Get(ctx, queue.NewID())
	assert.ErrorIs(t, err, pghistory.ErrNotFound)
	_, err = s.Get(ctx, "no/such id")
	assert.ErrorIs(t, err, pghistory.ErrNotFound)
}

func TestSaveRefusesInvalidRecords(t *testing.T) {
	s, _ := open(t)
	for _, tc := range []struct {
		name   string
		change func(*pghistory.Record)
	}{
		{"bad id", func(r *pghistory.Record) { r.TaskID = "a b" }},
		{"no flow", func(r *pghistory.Record) { r.Flow = "" }},
		{"not ended", func(r *pghistory.Record) { r.State = progress.StateProgress }},
		{"no end time", func(r *pghistory.Record) { r.EndedAt = time.Time{} }},
		{"inputs not JSON", func(r *pghistory.Record) { r.Inputs = json.RawMessage(`{"a":`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := record(0)
			tc.change(&r)
			err := s.Save(context.Background(), r)
			require.ErrorIs(t, err, pghistory.ErrInvalidRecord)
			page, err := s.List(context.Background(), pghistory.Query{})
			require.NoError(t, err)
			assert.Empty(t, page.Records, "nothing written")
		})
	}
}

func TestListFiltersAndPages(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	var all []pghistory.Record
	for i := range 40 {
		r := record(i / 2) // two tasks end at each second: ties broken by id
		r.Flow = []string{"poem_flow", "web_search_flow"}[i%2]
		if i%3 == 0 {
			r.State, r.Status = progress.StateFailure, "boom"
			r.Snapshot.State, r.Snapshot.Details.Status = progress.StateFailure, "boom"
		}
		r.Owner = []string{"", "alice", "bob", "alice"}[i%4]
		require.NoError(t, s.Save(ctx, r))
		all = append(all, r)
	}
	newestFirst := func(rs []pghistory.Record) []string {
		rs = append([]pghistory.Record(nil), rs...)
		sort.Slice(rs, func(i, j int) bool {
			if !rs[i].EndedAt.Equal(rs[j].EndedAt) {
				return rs[i].EndedAt.After(rs[j].EndedAt)
			}
			return rs[i].TaskID > rs[j].TaskID
		})
		ids := make([]string, len(rs))
		for i, r := range rs {
			ids[i] = r.TaskID
		}
		return ids
	}
	where := func(keep func(pghistory.Record) bool) []string {
		var out []pghistory.Record
		for _, r := range all {
			if keep(r) {
				out = append(out, r)
			}
		}
		return newestFirst(out)
	}
	for _, tc := range []struct {
		name  string
		query pghistory.Query
		want  []string
	}{
		{"everything", pghistory.Query{}, where(func(pghistory.Record) bool { return true })},
		{"by flow", pghistory.Query{Flow: "web_search_flow"}, where(func(r pghistory.Record) bool { return r.Flow == "web_search_flow" })},
		{"by state", pghistory.Query{State: progress.StateFailure}, where(func(r pghistory.Record) bool { return r.State == progress.StateFailure })},
		{"by owner", pghistory.Query{Owner: "alice"}, where(func(r pghistory.Record) bool { return r.Owner == "alice" })},
		{"by time range", pghistory.Query{Since: t0.Add(5 * time.Second), Until: t0.Add(12 * time.Second)},
			where(func(r pghistory.Record) bool {
				return !r.EndedAt.Before(t0.Add(5*time.Second)) && r.EndedAt.Before(t0.Add(12*time.Second))
			})},
		{"all at once", pghistory.Query{Flow: "poem_flow", State: progress.StateSuccess, Owner: "bob", Since: t0.Add(3 * time.Second)},
			where(func(r pghistory.Record) bool {
				return r.Flow == "poem_flow" && r.State == progress.StateSuccess && r.Owner == "bob" && !r.EndedAt.Before(t0.Add(3*time.Second))
			})},
		{"nothing", pghistory.Query{Flow: "no_such_flow"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, limit := range []int{0, 1, 7, 1000} {
				var got []string
				q := tc.query
				q.Limit = limit
				pages := 0
				for {
					page, err := s.List(ctx, q)
					require.NoError(t, err)
					pages++
					if limit > 0 {
						require.LessOrEqual(t, len(page.Records), limit)
					}
					for _, r := range page.Records {
						got = append(got, r.TaskID)
					}
					if page.Next == "" {
						break
					}
					require.NotEmpty(t, page.Records, "a page with a next cursor has records")
					q.Cursor = page.Next
					require.Less(t, pages, 100, "paging does not end")
				}
				assert.Equal(t, tc.want, got, "limit %d: every task once, newest first", limit)
			}
		})
	}

	t.Run("bad queries", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			query pghistory.Query
			is    error
		}{
			{"cursor not base64", pghistory.Query{Cursor: "%%%"}, pghistory.ErrBadCursor},
			{"cursor of nothing", pghistory.Query{Cursor: "bm90aGluZw"}, pghistory.ErrBadCursor},
			{"negative limit", pghistory.Query{Limit: -1}, nil},
			{"limit too large", pghistory.Query{Limit: pghistory.MaxLimit + 1}, nil},
			{"state not terminal", pghistory.Query{State: progress.StatePending}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := s.List(ctx, tc.query)
				require.Error(t, err)
				if tc.is != nil {
					assert.ErrorIs(t, err, tc.is)
				}
			})
		}
	})
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t.Run("unreachable", func(t *testing.T) {
		// The server's port with nobody listening: a port of a stopped
		// server of our own, never the machine's PostgreSQL.
		srv := pgtest.Start(t)
		url := srv.URL()
		srv.Stop()
		_, err := pghistory.Open(ctx, url, pghistory.Config{})
		require.Error(t, err)
		assert.ErrorIs(t, err, queue.ErrUnavailable)
	})
	t.Run("malformed URL keeps its secret", func(t *testing.T) {
		_, err := pghistory.Open(ctx, "postgres://u:s3cret@127.0.0.1:notaport/db", pghistory.Config{})
		require.Error(t, err)
		assert.False(t, strings.Contains(err.Error(), "s3cret"), "error %q shows the password", err)
	})
	t.Run("empty URL", func(t *testing.T) {
		_, err := pghistory.Open(ctx, "", pghistory.Config{})
		require.Error(t, err)
	})
}
