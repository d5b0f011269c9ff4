package redistest

import (
	"os/exec"
	"syscall"
)

// terminateSignal asks redis-server to shut down cleanly.
var terminateSignal = syscall.SIGTERM

// setProcAttr makes the kernel kill the server if the test process dies
// without running its cleanups, so no server outlives a crashed test.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
