package pghistory_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/pghistory"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// TestSaveKeepsTextPostgreSQLRefuses: PostgreSQL stores no NUL character
// and no byte that is not UTF-8, in text or in jsonb. A task whose status,
// owner, inputs, step results or result hold one (an error message with
// a NUL in it, an input "\u0000") is saved all the same, each such
// character written as U+FFFD, and is found by the owner it was saved
// with: its hook does not fail for a day on a row PostgreSQL can never
// take.
func TestSaveKeepsTextPostgreSQLRefuses(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	r := record(0)
	r.Status = "bad\x00status \xff"
	r.Snapshot.Details.Status = r.Status
	r.Owner = "user:\x00ada"
	r.Inputs = json.RawMessage(`{"topic":"ot\u0000ters","n":12345678901234567890,"esc":"\\u0000"}`)
	r.Snapshot.Details.StepResults = []progress.StepResult{{Type: progress.StepLog, Message: "a\x00b"}}
	r.Snapshot.Details.FinalResult = json.RawMessage(`{"text":"x\u0000y"}`)
	require.NoError(t, s.Save(ctx, r))

	got, err := s.Get(ctx, r.TaskID)
	require.NoError(t, err)
	assert.Equal(t, "bad\uFFFDstatus \uFFFD", got.Status)
	assert.Equal(t, "user:\uFFFDada", got.Owner)
	assert.JSONEq(t, `{"topic":"ot\uFFFDters","n":12345678901234567890,"esc":"\\u0000"}`, string(got.Inputs),
		"a NUL is replaced; an escaped backslash before u0000, and a number, are kept")
	require.Len(t, got.Snapshot.Details.StepResults, 1)
	assert.Equal(t, "a\uFFFDb", got.Snapshot.Details.StepResults[0].Message)
	assert.JSONEq(t, `{"text":"x\uFFFDy"}`, string(got.Snapshot.Details.FinalResult))

	page, err := s.List(ctx, pghistory.Query{Owner: "user:\x00ada"})
	require.NoError(t, err)
	require.Len(t, page.Records, 1, "found by the owner it was saved with")
	assert.Equal(t, r.TaskID, page.Records[0].TaskID)

	f := finished(r)
	f.Task.ID = queue.NewID()
	hctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	require.NoError(t, s.Hook(hctx, f), "the hook writes the row")
}

// TestListHistoryWithTextPostgreSQLRefuses: a listing filtered by a
// flow or an owner that PostgreSQL cannot hold as text (a NUL, a byte
// that is not UTF-8; GET /tasks/?owner=%00) is a query like any other,
// not an error of the database (500 over HTTP).
func TestListHistoryWithTextPostgreSQLRefuses(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	require.NoError(t, s.Save(ctx, record(0)))
	for _, q := range []queue.HistoryQuery{
		{Owner: "\x00", Limit: 10},
		{Flow: "\xff", Limit: 10},
		{Owner: "a\xffb", Flow: "poem\x00", Limit: 10},
	} {
		page, err := s.ListHistory(ctx, q)
		require.NoError(t, err, "%+v", q)
		assert.Empty(t, page.Tasks)
	}
}

// TestSaveKeepsLoneSurrogates: JSON may escape a UTF-16 surrogate that
// has no partner ("\ud800"), which json.Valid accepts and jsonb refuses
// (SQLSTATE 22P02: a low surrogate must follow a high one). A task whose
// inputs or result hold one (a client's body, a flow's json.RawMessage)
// is saved all the same, the lone surrogate written as U+FFFD, and a
// surrogate pair is kept as the character it encodes.
func TestSaveKeepsLoneSurrogates(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	r := record(0)
	r.Inputs = json.RawMessage(`{"topic":"a\ud800b","low":"\uDC00","pair":"\ud83d\ude00"}`)
	r.Snapshot.Details.FinalResult = json.RawMessage(`["x\udbff"]`)
	require.NoError(t, s.Save(ctx, r))

	got, err := s.Get(ctx, r.TaskID)
	require.NoError(t, err)
	assert.JSONEq(t, `{"topic":"a\uFFFDb","low":"\uFFFD","pair":"😀"}`, string(got.Inputs))
	assert.JSONEq(t, `["x\uFFFD"]`, string(got.Snapshot.Details.FinalResult))
}
