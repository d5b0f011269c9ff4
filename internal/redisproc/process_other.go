//go:build !linux

package redisproc

import (
	"os/exec"
	"syscall"
)

// terminateSignal asks redis-server to shut down cleanly.
var terminateSignal = syscall.SIGTERM

// setProcAttr leaves the process attributes alone where the kernel cannot
// tie the server's life to its parent's.
func setProcAttr(*exec.Cmd) {}

// freezeSignals are not sent where the platform has none (Server.Freeze
// fails).
var freezeSignals [2]syscall.Signal
