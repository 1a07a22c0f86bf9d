// Command sysvm is the system VM control plane: `sysvm dev` runs the whole platform on embedded
// defaults; `worker`, `api` and `migrate` are the production processes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `sysvm — system VM control plane

Usage:
  sysvm dev       run everything on embedded defaults (Temporal dev server, SQLite, simulators, worker, API)
  sysvm worker    run a Temporal worker
  sysvm api       run the REST API
  sysvm migrate   apply the database schema migrations ("sysvm migrate status" shows the version)
  sysvm help      this text

Each command takes -h for its flags; every flag also reads a SYSVM_* environment variable.
Secrets (SYSVM_SECRET_KEY, SYSVM_API_KEY, SYSVM_DB_DSN, SYSVM_TEMPORAL_API_KEY) are best
passed as variables; -h shows whether they are set, never their values.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	slog.SetDefault(logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "dev":
		err = runDev(ctx, logger, args)
	case "worker":
		err = runWorker(ctx, logger, args)
	case "api":
		err = runAPI(ctx, logger, args)
	case "migrate":
		err = runMigrate(ctx, logger, args)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		logger.Error("sysvm "+os.Args[1]+" failed", "error", err)
		os.Exit(1)
	}
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("SYSVM_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}
