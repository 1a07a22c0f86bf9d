package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// workerProc is a `sysvm worker` process.
type workerProc struct {
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{}
	err     error // set when done is closed
}

// startWorker starts `<bin> worker` with env added to this process's environment (later
// entries win), its output going to logPath. The process is killed if this one dies.
func startWorker(bin, logPath string, env []string) (*workerProc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("worker log: %w", err)
	}
	cmd := exec.Command(bin, "worker")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("start %s worker: %w", bin, err)
	}
	w := &workerProc{cmd: cmd, logPath: logPath, logFile: lf, done: make(chan struct{})}
	go func() {
		w.err = cmd.Wait()
		close(w.done)
	}()
	return w, nil
}

func (w *workerProc) pid() int { return w.cmd.Process.Pid }

// stop interrupts the worker and waits for it, killing it after workerStopTimeout. A worker
// that had already exited on its own is an error.
func (w *workerProc) stop() error {
	defer w.logFile.Close()
	select {
	case <-w.done:
		return fmt.Errorf("the worker exited during the benchmark: %v", w.err)
	default:
	}
	_ = w.cmd.Process.Signal(os.Interrupt)
	select {
	case <-w.done:
	case <-time.After(workerStopTimeout):
		_ = w.cmd.Process.Kill()
		<-w.done
		return errors.New("the worker did not stop within 15s of an interrupt and was killed")
	}
	return nil
}

// tail returns up to the last n bytes of the worker's log.
func (w *workerProc) tail(n int64) string {
	f, err := os.Open(w.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
