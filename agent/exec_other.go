//go:build !linux

package agent

import "os/exec"

// setProcessGroup is a no-op off Linux: the sandbox fleet still runs, only without process
// group kills of custom checks.
func setProcessGroup(cmd *exec.Cmd) {}
