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
	}
	fmt.Fprintf(stderr, "sh: %s: not found\n", argv[0])
	return 127
}
