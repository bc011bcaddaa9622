package testinfra

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// groupRunning sees a live process of the group, and none once it has
// exited and been reaped.
func TestGroupRunning(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc: not Linux")
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start sleep:", err)
	}
	pgid := cmd.Process.Pid
	if !groupRunning(pgid) {
		t.Error("the started process's group is not seen running")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // reaped: no zombie left
	if groupRunning(pgid) {
		t.Error("the group is still seen running after its only process exited")
	}
}
