package pgtest_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/pghistory/pgtest"
)

// TestMissingBinaries: a directory without initdb and pg_ctl fails with
// the install hint, never a skip.
func TestMissingBinaries(t *testing.T) {
	t.Setenv("PG_BIN", t.TempDir())
	_, err := pgtest.StartProcess()
	require.ErrorIs(t, err, pgtest.ErrNotInstalled)
	assert.Contains(t, err.Error(), "apt-get install postgresql")
}

// TestStartsItsOwnServer: a server of its own, on a port that is not the
// machine's PostgreSQL's, with databases to hand out.
func TestStartsItsOwnServer(t *testing.T) {
	srv := pgtest.Start(t)
	assert.NotEqual(t, 5432, srv.Port())
	a, b := srv.Database(t), srv.Database(t)
	assert.NotEqual(t, a, b, "each database is new")
}
