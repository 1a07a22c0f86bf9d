package agent

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Exit statuses of Main.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// usage is the command-line contract the platform uses over SSH.
const usage = `usage: sysvm-agent [--root DIR] <command>

commands:
  push-config         read the health check configuration (JSON) on stdin and store it
                      in <root>/root/health_checks_data.json
  apply-rules         read the configuration (JSON) on stdin, store it and serve it:
                      /etc/hosts, /etc/dhcphosts.txt, haproxy.cfg and the iptables rules
                      are rewritten and the daemons reloaded; prints what was done as JSON
  run basic|advanced  run the checks, write <root>/root/basic_monitor_results.json or
                      advance_monitor_results.json, print the run as JSON
  results basic|advanced
                      print the last results file of that type
  version             print the agent, template and scripts versions (and the live patch
                      bundle installed, if any) as JSON
  patch [--force]     read a live patch bundle (JSON: version, checksum, files) on stdin,
                      verify its checksum, install its files, restart the services and
                      record its version; a bundle installed already is a no-op unless
                      --force; prints what was done as JSON
  ip-assoc            read a JSON list of service addresses ({ip, kind, add}) on stdin,
                      bring them up or release them, print the addresses held as JSON
`

// VersionInfo is what `sysvm-agent version` prints.
type VersionInfo struct {
	AgentVersion string `json:"agentVersion"`
	// TemplateVersion is the first line of /etc/cloudstack-release ("" when absent).
	TemplateVersion string `json:"templateVersion"`
	// ScriptsVersion is the first line of /var/cache/cloud/cloud-scripts-signature.
	ScriptsVersion string `json:"scriptsVersion"`
	// SoftwareVersion is the version of the live patch bundle installed ("" when none).
	SoftwareVersion string `json:"softwareVersion,omitempty"`
}

// Main is the whole sysvm-agent command: argv are the arguments after the program name, root
// is the default file tree ("/" in a real router; --root overrides it), sys is the System.
// The simulated fleet calls exactly this function for each `sysvm-agent ...` exec request.
// It returns the exit status: 0 on success (a run whose checks failed is still a success: the
// failures are in the printed results), 1 on an error, 2 on a usage error.
func Main(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer, sys System, root string) int {
	fl := flag.NewFlagSet("sysvm-agent", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() { fmt.Fprint(stderr, usage) }
	rootFlag := fl.String("root", root, "the router's file system root")
	if err := fl.Parse(argv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	args := fl.Args()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	a := New(*rootFlag, sys, logger)
	errorf := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "sysvm-agent: "+format+"\n", args...)
		return ExitError
	}
	printJSON := func(v any) int {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return errorf("write output: %v", err)
		}
		return ExitOK
	}
	typeArg := func() (CheckType, bool) {
		if len(args) != 2 {
			fmt.Fprintf(stderr, "sysvm-agent: %s needs one argument, basic or advanced\n", args[0])
			return "", false
		}
		t, err := ParseCheckType(args[1])
		if err != nil {
			fmt.Fprintf(stderr, "sysvm-agent: %v\n", err)
			return "", false
		}
		return t, true
	}

	switch args[0] {
	case "push-config":
		if len(args) != 1 {
			fmt.Fprint(stderr, "sysvm-agent: push-config takes no arguments (the configuration comes on stdin)\n")
			return ExitUsage
		}
		cfg, err := DecodeConfig(io.LimitReader(stdin, 64<<20))
		if err != nil {
			return errorf("%v", err)
		}
		if err := a.SaveConfig(cfg); err != nil {
			return errorf("%v", err)
		}
		return ExitOK
	case "apply-rules":
		return a.applyRulesCommand(ctx, args, stdin, stderr, printJSON)
	case "run":
		t, ok := typeArg()
		if !ok {
			return ExitUsage
		}
		run, writeErr, err := a.RunAndRecord(ctx, t)
		if err != nil {
			return errorf("%v", err)
		}
		if writeErr != nil {
			// The results still go to the platform; filesystem.writable.test says why the
			// file is missing.
			fmt.Fprintf(stderr, "sysvm-agent: %v\n", writeErr)
		}
		return printJSON(run)
	case "results":
		t, ok := typeArg()
		if !ok {
			return ExitUsage
		}
		run, err := a.LastRun(t)
		if err != nil {
			return errorf("%v", err)
		}
		return printJSON(run)
	case "version":
		if len(args) != 1 {
			fmt.Fprint(stderr, "sysvm-agent: version takes no arguments\n")
			return ExitUsage
		}
		v := VersionInfo{AgentVersion: Version}
		v.TemplateVersion, _ = a.firstLine(ReleaseFile)
		v.ScriptsVersion, _ = a.firstLine(ScriptsSignatureFile)
		if rec, ok, _ := a.InstalledPatch(); ok && rec.Checksum == v.ScriptsVersion {
			v.SoftwareVersion = rec.Version
		}
		return printJSON(v)
	case "patch":
		return a.patchCommand(ctx, args, stdin, stderr, printJSON)
	case "ip-assoc":
		if len(args) != 1 {
			fmt.Fprint(stderr, "sysvm-agent: ip-assoc takes no arguments (the addresses come on stdin)\n")
			return ExitUsage
		}
		list, err := DecodeIPAssociations(io.LimitReader(stdin, 1<<20))
		if err != nil {
			return errorf("%v", err)
		}
		res, err := a.AssociateIPs(ctx, list)
		if err != nil {
			return errorf("%v", err)
		}
		return printJSON(res)
	case "help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(stderr, "sysvm-agent: unknown command %q\n%s", args[0], usage)
	return ExitUsage
}
