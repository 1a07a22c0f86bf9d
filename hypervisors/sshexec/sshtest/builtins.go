package sshtest

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// maxSleep bounds the builtin sleep so a forgotten session cannot hold a test for long.
const maxSleep = 30 * time.Second

// Builtins is the default ExecHandler, a tiny command set:
//
//	echo ARGS...      print ARGS joined by spaces and a newline
//	argv ARGS...      print ARGS as a JSON array (shows exactly how the words arrived)
//	cat               copy stdin to stdout
//	stderr ARGS...    print ARGS joined by spaces and a newline to stderr
//	exit N            exit with status N
//	true / false      exit 0 / 1
//	sleep SECONDS     sleep (at most 30s); ends early with status 137 when the session is
//	                  closed or signalled
//	timeout [-s SIG] SECONDS CMD ARGS...
//	                  run a builtin with a time limit, as coreutils timeout: status 124 when
//	                  it expired (137 with -s KILL)
//
// Any other command prints "sh: NAME: not found" to stderr and exits 127, as sh does.
func Builtins(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(argv) == 0 {
		return 0
	}
	args := argv[1:]
	switch argv[0] {
	case "echo":
		fmt.Fprintln(stdout, strings.Join(args, " "))
		return 0
	case "argv":
		b, err := json.Marshal(args)
		if err != nil {
			fmt.Fprintf(stderr, "argv: %v\n", err)
			return 1
		}
		_, _ = stdout.Write(append(b, '\n'))
		return 0
	case "cat":
		if _, err := io.Copy(stdout, stdin); err != nil {
			fmt.Fprintf(stderr, "cat: %v\n", err)
			return 1
		}
		return 0
	case "stderr":
		fmt.Fprintln(stderr, strings.Join(args, " "))
		return 0
	case "exit":
		if len(args) != 1 {
			fmt.Fprintln(stderr, "exit: usage: exit N")
			return 2
		}
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 0 || n > 255 {
			fmt.Fprintf(stderr, "exit: %s: numeric argument 0-255 required\n", args[0])
			return 2
		}
		return n
	case "true":
		return 0
	case "false":
		return 1
	case "sleep":
		if len(args) != 1 {
			fmt.Fprintln(stderr, "sleep: usage: sleep SECONDS")
			return 2
		}
		secs, err := strconv.ParseFloat(args[0], 64)
		if err != nil || secs < 0 {
			fmt.Fprintf(stderr, "sleep: invalid time interval %q\n", args[0])
			return 1
		}
		d := min(time.Duration(secs*float64(time.Second)), maxSleep)
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
			return 0
		case <-SessionDone(stdout):
			return 137
		}
	case "timeout":
		return timeout(args, stdin, stdout, stderr)
	}
	fmt.Fprintf(stderr, "sh: %s: not found\n", argv[0])
	return 127
}

// timeout runs a builtin whose session ends (as SessionDone sees it) after a time limit.
func timeout(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	expired := 124
	if len(args) >= 2 && args[0] == "-s" {
		if args[1] == "KILL" || args[1] == "9" {
			expired = 137
		}
		args = args[2:]
	}
	if len(args) < 2 {
		fmt.Fprintln(stderr, "timeout: usage: timeout [-s SIG] SECONDS CMD ARGS...")
		return 125
	}
	secs, err := strconv.ParseFloat(args[0], 64)
	if err != nil || secs < 0 {
		fmt.Fprintf(stderr, "timeout: invalid time interval %q\n", args[0])
		return 125
	}
	done := make(chan struct{})
	fired := make(chan struct{})
	timer := time.AfterFunc(time.Duration(secs*float64(time.Second)), func() { close(fired); close(done) })
	parent := SessionDone(stdout)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-parent:
			if timer.Stop() {
				close(done)
			}
		case <-stop:
		}
	}()
	code := Builtins(args[1:], stdin, sessionWriter{Writer: stdout, done: done}, sessionWriter{Writer: stderr, done: done})
	timer.Stop()
	select {
	case <-fired:
		return expired
	default:
		return code
	}
}
