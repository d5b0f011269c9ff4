package pghistory_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/pghistory"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// mixedIDs are task ids that queue.ValidID accepts and that a linguistic
// collation orders otherwise than bytes do (en-US weighs the letter
// before its case, and _ and - before digits and letters: ascending,
// _x -y 0 a_1 A_1 a-1 A-1 ab aB b B Z): ids of your own, given to a
// backend's Enqueue or to Save (the Broker's are lowercase hex, which
// every collation orders alike).
var mixedIDs = []string{"A-1", "a_1", "B", "b", "a-1", "A_1", "Z", "0", "_x", "-y", "ab", "aB"}

// byteOrder is ids as a listing orders one millisecond's tasks: by id,
// greatest first, byte by byte (queue.Cursor, the order of Go strings).
func byteOrder(ids []string) []string {
	s := slices.Clone(ids)
	slices.Sort(s)
	slices.Reverse(s)
	return s
}

// collatedDatabases make the databases the collation tests run on: one
// of the test server's collation (C, byte order) and one whose default
// collation is ICU's en-US, linguistic as en_US.UTF-8 is on many
// installations (the test machine need not have that locale).
var collatedDatabases = map[string]func(t *testing.T) string{
	"C":     func(t *testing.T) string { return server.Database(t) },
	"en-US": linguisticDatabase,
}

// linguisticDatabase returns a new database whose default collation is
// ICU's en-US, after checking that it does not sort text byte by byte.
func linguisticDatabase(t *testing.T) string {
	t.Helper()
	url := server.DatabaseICU(t, "en-US")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var linguistic bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT 'a_1' < 'B' AND 'b' < 'B'").Scan(&linguistic))
	require.True(t, linguistic, "the database sorts byte by byte: the test would prove nothing")
	return url
}

// TestListOrdersIDsByteByByte: tasks that ended in one millisecond come
// by id, greatest first, byte by byte, whatever the database's
// collation, page after page: the order of a listing's cursor, in which
// Inspector.List merges them with the backend's. With the database's
// collation en-US, the history paged A-1 after a_1 and b after B, and
// its cursor's comparison skipped or repeated tasks at a page's end.
func TestListOrdersIDsByteByByte(t *testing.T) {
	for name, db := range collatedDatabases {
		t.Run(name, func(t *testing.T) {
			s, _ := openURL(t, db(t))
			ctx := context.Background()
			for _, id := range mixedIDs {
				r := record(0)
				r.TaskID = id
				require.NoError(t, s.Save(ctx, r))
			}
			want := byteOrder(mixedIDs)
			for _, limit := range []int{1, 2, 3, 5, 50} {
				var got []string
				q := pghistory.Query{Limit: limit}
				for pages := 0; ; pages++ {
					require.Less(t, pages, len(mixedIDs)+2, "the listing does not end")
					page, err := s.List(ctx, q)
					require.NoError(t, err)
					for _, r := range page.Records {
						got = append(got, r.TaskID)
					}
					if page.Next == "" {
						break
					}
					q.Cursor = page.Next
				}
				assert.Equal(t, want, got, "limit %d", limit)

				// The history's side of a merged listing: the tasks
				// after a position, as queue.Cursor orders them.
				for i, id := range want {
					hp, err := s.ListHistory(ctx, queue.HistoryQuery{Limit: limit, After: &queue.Cursor{At: t0, ID: id}})
					require.NoError(t, err)
					after := []string{}
					for _, task := range hp.Tasks {
						after = append(after, task.ID)
					}
					rest := want[i+1:]
					assert.Equal(t, rest[:min(limit, len(rest))], after, "limit %d, after %s", limit, id)
				}
			}
		})
	}
}

// TestMergedListingMixedCaseIDs pages through a listing of Redis and the
// history whose tasks, with ids of mixed case, _ and -, all entered their
// state in one millisecond, some in Redis (enqueued with ids of their
// own through Backend.Enqueue), some in the history only: every task
// comes once, by id, greatest first, byte by byte, on a database whose
// collation is en-US as on one whose collation is C.
func TestMergedListingMixedCaseIDs(t *testing.T) {
	for name, db := range collatedDatabases {
		t.Run(name, func(t *testing.T) {
			s, _ := openURL(t, db(t))
			client := redistest.Start(t).Client(t)
			backend, err := redisbackend.New(client, redisbackend.Config{})
			require.NoError(t, err)
			ctx := context.Background()
			at := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Minute)
			var ids []string
			for i, id := range mixedIDs {
				if i%3 == 0 { // in Redis, pending since at
					require.NoError(t, backend.CreateAndEnqueue(ctx, &queue.Task{ID: id, Flow: "ok", Inputs: []byte(`{}`),
						MaxAttempts: 1, Timeout: time.Minute, EnqueuedAt: at}))
				} else { // in the history only, ended at
					r := record(0)
					r.TaskID, r.Flow, r.EndedAt = id, "ok", at
					r.EnqueuedAt, r.StartedAt = at.Add(-2*time.Second), at.Add(-time.Second)
					require.NoError(t, s.Save(ctx, r))
				}
				ids = append(ids, id)
			}
			inspector := queue.NewInspector(backend, nil, queue.InspectorConfig{History: s})
			// The Redis tasks are where the test put them.
			all := listPages(t, inspector, queue.ListOptions{Limit: 1000}, 2)
			for _, task := range all {
				require.True(t, at.Equal(task.ChangedAt()), "%s at %v, not %v", task.ID, task.ChangedAt(), at)
			}
			want := byteOrder(ids)
			for _, limit := range []int{1, 2, 3, 5, 50} {
				var got []string
				for _, task := range listPages(t, inspector, queue.ListOptions{Limit: limit}, 2*len(ids)+2) {
					got = append(got, task.ID)
				}
				assert.Equal(t, want, got, "limit %d: %s", limit, strings.Join(got, " "))
			}
		})
	}
}

// TestMigrateUpgradesFrom004: a table that migrations 001 to 004 made on
// a database whose collation is en-US, with rows of ids of mixed case, is
// brought to byte order by Open (migration 005): its rows are all there
// and listed by id byte by byte, and the listing's queries, with a cursor
// and each filter, read an index in its order, with no sort, as before.
func TestMigrateUpgradesFrom004(t *testing.T) {
	files := migrationFiles(t)
	require.GreaterOrEqual(t, len(files), 5)
	require.Equal(t, "005_task_id_bytes.sql", filepath.Base(files[4]))
	ctx := context.Background()
	url := linguisticDatabase(t)
	conn := migrateTo(t, url, 4)
	for _, id := range mixedIDs {
		r := record(0)
		snap, err := json.Marshal(r.Snapshot)
		require.NoError(t, err)
		_, err = conn.Exec(ctx, `INSERT INTO flows_task_history (task_id, flow, state, snapshot, attempts, max_attempts, ended_at)
			VALUES ($1, $2, $3, $4, 1, 3, $5)`, id, r.Flow, string(r.State), string(snap), r.EndedAt)
		require.NoError(t, err)
	}

	upgrade(t, conn, url)

	s, _ := openURL(t, url)
	page, err := s.List(ctx, pghistory.Query{})
	require.NoError(t, err)
	var got []string
	for _, r := range page.Records {
		got = append(got, r.TaskID)
	}
	assert.Equal(t, byteOrder(mixedIDs), got)
	for _, id := range mixedIDs {
		_, err := s.Get(ctx, id)
		assert.NoError(t, err, "task %s", id)
	}

	// The plans of List's queries (query.go) on this table: each reads
	// the index of its filter in its order, a cursor as its start.
	_, err = conn.Exec(ctx, "SET enable_seqscan = off")
	require.NoError(t, err)
	const order = ` ORDER BY ended_at DESC, task_id COLLATE "C" DESC LIMIT 51`
	const cursor = `(ended_at, task_id COLLATE "C") < ($1, $2)`
	for _, tc := range []struct{ where, index string }{
		{cursor, "flows_task_history_ended"},
		{"flow = 'ok' AND " + cursor, "flows_task_history_flow"},
		{"owner = 'alice' AND " + cursor, "flows_task_history_owner"},
		{"state = 'FAILURE' AND " + cursor, "flows_task_history_state"},
	} {
		rows, err := conn.Query(ctx, "EXPLAIN SELECT * FROM flows_task_history WHERE "+tc.where+order, t0, "a_1")
		require.NoError(t, err)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		plan := strings.Join(lines, "\n")
		assert.Contains(t, plan, "Index Scan using "+tc.index+" ", "WHERE %s:\n%s", tc.where, plan)
		assert.NotContains(t, plan, "Sort", "WHERE %s:\n%s", tc.where, plan)
		assert.Regexp(t, `Index Cond: .*ROW\(ended_at, task_id\) < ROW\(`, plan, "the cursor is the index's start: WHERE %s:\n%s", tc.where, plan)
	}
}
