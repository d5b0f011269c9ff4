package redisproc

import (
	"os/exec"
	"syscall"
)

// terminateSignal asks redis-server to shut down cleanly.
var terminateSignal = syscall.SIGTERM

// setProcAttr makes the kernel kill the server if the process that
// started it dies without stopping it, so no server outlives a crashed
// test or benchmark.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// freezeSignals stop and resume a process (Server.Freeze).
var freezeSignals = [2]syscall.Signal{syscall.SIGSTOP, syscall.SIGCONT}
