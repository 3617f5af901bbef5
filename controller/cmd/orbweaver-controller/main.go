// Command orbweaver-controller runs the Orbweaver controller: the agents'
// gRPC endpoint, the operators' control API, and storage in PostgreSQL.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/orbweaver/orbweaver/controller"
	"github.com/orbweaver/orbweaver/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("orbweaver-controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listen   = fs.String("listen", "127.0.0.1:7700", "gRPC listen address (agents and control API)")
		dbURL    = fs.String("database-url", os.Getenv("ORBWEAVER_DATABASE_URL"), "PostgreSQL URL (env ORBWEAVER_DATABASE_URL); empty starts a private embedded cluster in --data-dir")
		dataDir  = fs.String("data-dir", defaultDataDir(), "directory for the embedded database and demo state")
		demo     = fs.Bool("demo", false, "also run a demo mesh of services and an agent capturing it on lo")
		logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "--log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := controller.Run(ctx, controller.Config{
		Listen:      *listen,
		DatabaseURL: *dbURL,
		DataDir:     *dataDir,
		Demo:        *demo,
		Version:     version.Version,
		Logger:      log,
	})
	if err != nil {
		fmt.Fprintf(stderr, "orbweaver-controller: %v\n", err)
		return 1
	}
	return 0
}

// defaultDataDir must be reachable by the postgres system user when the
// controller runs as root (the embedded database drops privileges).
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/orbweaver"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "orbweaver")
	}
	return ".orbweaver"
}
