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
