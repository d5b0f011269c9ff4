package redisbackend

import (
	"io/fs"
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
)

// packageScripts are the scripts the package runs.
var packageScripts = []*script{
	appendScript, createScript, createTaskScript, enqueueScript, fetchScript, extendScript, retryScript, endAttemptScript, noRunScript,
	ackScript, finishScript, buryScript, deadScript, requeueScript, cancelScript, readyScript, retireScript,
	heartbeatScript,
	checkpointScript, admitScript, callerAdmitScript, endCutScript, dropOrphanScript, snapshotScript,
}

// luaFileNames returns the names of the embedded files under dir.
func luaFileNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := fs.ReadDir(luaFiles, path.Join("lua", dir))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".lua") {
			names = append(names, path.Join(dir, e.Name()))
		}
	}
	require.NotEmpty(t, names)
	return names
}

// TestScriptFilesAreDocumented checks that every script file opens with
// its contract and is run by the package, and that every fragment says
// what it defines and is included somewhere.
func TestScriptFilesAreDocumented(t *testing.T) {
	t.Parallel()
	used := map[string]bool{}
	for _, s := range packageScripts {
		used[s.name] = true
	}
	for _, name := range luaFileNames(t, ".") {
		t.Run(name, func(t *testing.T) {
			text, err := luaFiles.ReadFile("lua/" + name)
			require.NoError(t, err)
			header := leadingComment(string(text))
			assert.True(t, strings.HasPrefix(header, "-- "+strings.TrimSuffix(name, ".lua")+": "), "the header names the script:\n%s", header)
			for _, word := range []string{"KEYS", "ARGV", "Returns"} {
				assert.Contains(t, header, word, "the header gives the script's %s", word)
			}
			assert.True(t, used[name], "no script of the package runs %s", name)
		})
	}
	for _, name := range luaFileNames(t, "lib") {
		t.Run(name, func(t *testing.T) {
			text, err := luaFiles.ReadFile("lua/" + name)
			require.NoError(t, err)
			assert.True(t, strings.HasPrefix(leadingComment(string(text)), "-- Fragment: "), "a fragment says what it defines")
		})
	}
	// The includes are read outside the subtests, so that a -run pattern
	// that skips them does not leave every fragment unincluded.
	included := map[string]bool{}
	for _, name := range append(luaFileNames(t, "."), luaFileNames(t, "lib")...) {
		text, err := luaFiles.ReadFile("lua/" + name)
		require.NoError(t, err)
		for line := range strings.Lines(string(text)) {
			if inc, ok := strings.CutPrefix(line, includeDirective); ok {
				included[strings.TrimSpace(inc)] = true
			}
		}
	}
	for _, name := range luaFileNames(t, "lib") {
		assert.True(t, included[name], "no script includes %s", name)
	}
}

// leadingComment returns the comment lines a file opens with, after its
// shebang line if it has one.
func leadingComment(text string) string {
	var b strings.Builder
	if strings.HasPrefix(text, "#!") { // a script's flags (see append.lua)
		_, text, _ = strings.Cut(text, "\n")
	}
	for line := range strings.Lines(text) {
		if !strings.HasPrefix(line, "--") || strings.HasPrefix(line, includeDirective) {
			break
		}
		b.WriteString(line)
	}
	return b.String()
}

func TestLoadScript(t *testing.T) {
	t.Parallel()
	t.Run("a fragment included twice is in once", func(t *testing.T) {
		// finish takes the clock in through the append fragment's expiry
		// fragment and the release fragment not at all; checkpoint
		// through the clock fragment and the expiry fragment; retry takes
		// three fragments, and the token fragment through two of them.
		assert.Equal(t, 1, strings.Count(finishScript.src, "local function readClock("))
		assert.Equal(t, 1, strings.Count(checkpointScript.src, "local function readClock("))
		assert.Equal(t, 1, strings.Count(finishScript.src, "local function append("))
		assert.Equal(t, 1, strings.Count(finishScript.src, "local function release("))
		for _, def := range []string{"local function schedule(", "local function release(", "if redis.call('ZREM', KEYS[2], token(ARGV[1], ARGV[2])) == 0 then", "local function token("} {
			assert.Equal(t, 1, strings.Count(retryScript.src, def), def)
		}
	})
	t.Run("fragments come first, in the order included", func(t *testing.T) {
		schedule := strings.Index(retryScript.src, "local function schedule(")
		release := strings.Index(retryScript.src, "local function release(")
		body := strings.Index(retryScript.src, "releaseHeld()\nschedule(")
		assert.True(t, schedule >= 0 && schedule < release && release < body, "retry's source:\n%s", retryScript.src)
	})
	t.Run("no comment line is sent", func(t *testing.T) {
		for _, s := range packageScripts {
			for line := range strings.Lines(s.src) {
				assert.False(t, strings.HasPrefix(strings.TrimSpace(line), "--"), "%s: %q", s.name, line)
			}
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := loadScript("nope.lua")
		assert.ErrorContains(t, err, "nope.lua")
	})
}

// TestScriptsCompile loads every script into a real Redis, which compiles
// it, and checks that Redis names it by the SHA-1 the package sends.
func TestScriptsCompile(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	for _, s := range packageScripts {
		t.Run(s.name, func(t *testing.T) {
			sha, err := srv.Do("SCRIPT", "LOAD", s.src).ToString()
			require.NoError(t, err, "source:\n%s", s.src)
			assert.Equal(t, s.sha, sha)
		})
	}
}
