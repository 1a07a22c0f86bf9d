package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// maxParallelCustom bounds how many custom check scripts run at once.
const maxParallelCustom = 4

// maxCustomDetails bounds the details kept from a custom check's stdout.
const maxCustomDetails = 4096

// customChecks runs every executable regular file in <root>/root/health_checks/ with the
// check type as its only argument, under the custom-check contract:
//   - stdout (trimmed) is the details;
//   - exit 0 passes, any other exit fails;
//   - exit 0 with no output means "not a check for this type": no result;
//   - a non-zero exit with no output still fails (a silently crashing script is not hidden);
//   - each script is killed after Config.CustomCheckTimeoutSec (with its process group) and
//     fails with details saying so;
//   - files that are not executable, directories and excluded names are ignored.
//
// Scripts run with the check directory as working directory and SYSVM_ROOT set to the agent's
// root ("/" in a real router), so a script can find the router's files in a sandbox too.
func (a *Agent) customChecks(ctx context.Context, cfg Config, t CheckType) []Result {
	dir := a.Path(CustomChecksDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.Logger.Warn("cannot list custom checks", "dir", dir, "err", err)
		}
		return nil
	}
	var scripts []string
	for _, e := range entries {
		if cfg.excluded(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if info.Mode().Perm()&0o111 == 0 {
			a.Logger.Debug("custom check is not executable, ignored", "file", e.Name())
			continue
		}
		scripts = append(scripts, e.Name())
	}
	sort.Strings(scripts)
	timeout := time.Duration(cfg.CustomCheckTimeoutSec) * time.Second
	if timeout <= 0 {
		timeout = DefaultCustomCheckTimeoutSec * time.Second
	}
	results := make([]*Result, len(scripts))
	sem := make(chan struct{}, maxParallelCustom)
	var wg sync.WaitGroup
	for i, name := range scripts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = a.runCustom(ctx, filepath.Join(dir, name), name, t, timeout)
		})
	}
	wg.Wait()
	var out []Result
	for _, r := range results {
		if r != nil {
			out = append(out, *r)
		}
	}
	return out
}

// runCustom runs one custom check; nil means the script is not a check for this type.
func (a *Agent) runCustom(ctx context.Context, path, name string, t CheckType, timeout time.Duration) *Result {
	notACheck := false
	res := a.timed(ctx, name, t, func(ctx context.Context) outcome {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		out, err := a.Sys.Exec(cctx, Command{
			Path: path,
			Args: []string{string(t)},
			Dir:  filepath.Dir(path),
			Env:  []string{"SYSVM_ROOT=" + a.Root},
		})
		msg := strings.TrimSpace(string(out.Stdout))
		if len(msg) > maxCustomDetails {
			msg = msg[:maxCustomDetails] + "..."
		}
		switch {
		case err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
			return fail("custom check timed out after %s and was killed", timeout)
		case err != nil:
			return fail("custom check could not run: %v", err)
		case out.ExitCode == 0 && msg == "":
			notACheck = true
			return outcome{success: true}
		case out.ExitCode == 0:
			return outcome{success: true, details: msg}
		case msg == "":
			return fail("custom check exited with status %d and printed nothing%s", out.ExitCode, stderrNote(out.Stderr))
		case out.ExitCode == 1:
			return fail("%s", msg)
		default:
			return fail("%s (exit status %d)", msg, out.ExitCode)
		}
	})
	if notACheck {
		return nil
	}
	return &res
}

// stderrNote quotes the start of a script's stderr, if any.
func stderrNote(stderr []byte) string {
	s := strings.TrimSpace(string(stderr))
	if s == "" {
		return ""
	}
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	return fmt.Sprintf("; stderr: %s", s)
}
