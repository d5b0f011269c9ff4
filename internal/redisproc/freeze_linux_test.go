package redisproc

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFreezeHoldsWhenTheStarterGroupIsContinued: a frozen server stays
// stopped when the process group of the process that started it is sent
// SIGCONT. The kernel sends SIGHUP and SIGCONT to a process group that
// becomes orphaned while one of its members is stopped: for a test binary
// run in the background, when the shell that started it exits. A server
// in its starter's group would then answer while its test takes it for
// frozen (as TestOpTimeoutWhileRedisHangs once saw); it runs in a process
// group of its own.
//
// The starter is this test binary run again in a process group of its
// own, so that the SIGCONT reaches no process of another test (go test
// runs the binaries of all packages in its own group).
func TestFreezeHoldsWhenTheStarterGroupIsContinued(t *testing.T) {
	if os.Getenv(freezeStarterEnv) == "1" {
		freezeAndContinueGroup(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFreezeHoldsWhenTheStarterGroupIsContinued$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), freezeStarterEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the starter:\n%s", out)
	require.Contains(t, string(out), "--- PASS", "the starter ran the test:\n%s", out)
}

// freezeStarterEnv marks the run of the test binary that starts and
// freezes the server (see TestFreezeHoldsWhenTheStarterGroupIsContinued).
const freezeStarterEnv = "REDISPROC_TEST_FREEZE_STARTER"

// freezeAndContinueGroup starts a server, freezes it, sends SIGCONT to
// its own process group and checks that the server stays stopped until
// it is resumed.
func freezeAndContinueGroup(t *testing.T) {
	s, err := Start(Options{})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	s.mu.Lock()
	pid := s.proc.Process.Pid
	s.mu.Unlock()

	resume, err := s.Freeze()
	require.NoError(t, err)
	t.Cleanup(resume)
	// SIGSTOP takes effect once the server is scheduled; SIGCONT at once.
	require.Eventually(t, func() bool { return procState(t, pid) == "T" }, StartTimeout, time.Millisecond,
		"the server did not stop")
	require.NoError(t, syscall.Kill(-syscall.Getpgrp(), syscall.SIGCONT))
	assert.Equal(t, "T", procState(t, pid), "the server was continued with its starter's process group")

	resume()
	assert.NotEqual(t, "T", procState(t, pid), "resume continues the server")
	assert.NoError(t, Ping(s.Addr()))
}

// procState returns the state letter of process pid (R, S, T, ...), as
// /proc/<pid>/stat gives it.
func procState(t *testing.T, pid int) string {
	t.Helper()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	require.NoError(t, err)
	// The command name, in parentheses, may hold spaces: the state is the
	// first field after its closing one.
	_, rest, ok := strings.Cut(string(stat), ") ")
	require.True(t, ok, "stat %q", stat)
	state, _, _ := strings.Cut(rest, " ")
	return state
}
