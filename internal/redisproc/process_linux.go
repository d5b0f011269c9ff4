package redisproc

import (
	"os/exec"
	"syscall"
)

// terminateSignal asks redis-server to shut down cleanly.
var terminateSignal = syscall.SIGTERM

// setProcAttr makes the kernel kill the server if the process that
// started it dies without stopping it, so no server outlives a crashed
// test or benchmark, and runs the server in a process group of its own,
// so that a frozen server (Server.Freeze) stays stopped until it is
// resumed: the kernel continues every member of a process group that
// becomes orphaned with a stopped member, as the group of a test run in
// the background does when the shell that started it exits.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// freezeSignals stop and resume a process (Server.Freeze).
var freezeSignals = [2]syscall.Signal{syscall.SIGSTOP, syscall.SIGCONT}
