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
	"time"

	"github.com/orbweaver/orbweaver/controller"
	"github.com/orbweaver/orbweaver/internal/auth"
	"github.com/orbweaver/orbweaver/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("orbweaver-controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listen        = fs.String("listen", "127.0.0.1:7700", "gRPC listen address (agents and control API)")
		dbURL         = fs.String("database-url", os.Getenv("ORBWEAVER_DATABASE_URL"), "PostgreSQL URL (env ORBWEAVER_DATABASE_URL); empty starts a private embedded cluster in --data-dir")
		dataDir       = fs.String("data-dir", defaultDataDir(), "directory for the embedded database, the token file and demo state")
		demo          = fs.Bool("demo", false, "also run a demo mesh of services and an agent capturing it on lo")
		metricsListen = fs.String("metrics-listen", "127.0.0.1:7701", "Prometheus /metrics listen address (empty: off)")
		tokensFile    = fs.String("tokens-file", "", "agent and operator tokens (JSON, mode 0600); default DATA-DIR/tokens.json, created with fresh tokens when missing")
		noAuth        = fs.Bool("no-auth", false, "accept unauthenticated agents and operators (local development only)")
		printToken    = fs.String("print-token", "", "print the token of this operator (e.g. admin, viewer) or 'enrollment' (agents), then exit")
		tlsCert       = fs.String("tls-cert", "", "server certificate (PEM) for TLS on the gRPC port")
		tlsKey        = fs.String("tls-key", "", "server private key (PEM)")
		tlsClientCA   = fs.String("tls-client-ca", "", "CA (PEM) verifying client certificates (mTLS)")
		requireCert   = fs.Bool("require-agent-cert", false, "agents must present a client certificate signed by --tls-client-ca")
		hbRetention   = fs.Duration("heartbeat-retention", 7*24*time.Hour, "how long agent heartbeats are kept (0: forever)")
		logLevel      = fs.String("log-level", "info", "debug, info, warn or error")
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
	cfg := controller.Config{
		Listen:                 *listen,
		DatabaseURL:            *dbURL,
		DataDir:                *dataDir,
		Demo:                   *demo,
		MetricsListen:          *metricsListen,
		Version:                version.Version,
		Logger:                 log,
		RequireAgentClientCert: *requireCert,
		HeartbeatRetention:     *hbRetention,
	}
	if *hbRetention == 0 {
		cfg.HeartbeatRetention = -1
	}
	if *tokensFile == "" {
		*tokensFile = filepath.Join(*dataDir, "tokens.json")
		// The data directory also holds the embedded database, which the
		// postgres user must reach when this runs as root: create it
		// traversable (0755) before EnsureTokens would create it private
		// (the token file itself is 0600).
		if err := os.MkdirAll(*dataDir, 0o755); err != nil {
			fmt.Fprintf(stderr, "orbweaver-controller: create data dir: %v\n", err)
			return 1
		}
	}
	if !*noAuth || *printToken != "" {
		tokens, created, err := auth.EnsureTokens(*tokensFile)
		if err != nil {
			fmt.Fprintf(stderr, "orbweaver-controller: tokens: %v\n", err)
			return 1
		}
		if *printToken != "" {
			tok, ok := tokens.OperatorToken(*printToken)
			if *printToken == "enrollment" {
				tok, ok = tokens.EnrollmentToken(), tokens.EnrollmentToken() != ""
			}
			if !ok {
				fmt.Fprintf(stderr, "orbweaver-controller: %s has no operator named %q\n", *tokensFile, *printToken)
				return 1
			}
			fmt.Fprintln(stdout, tok)
			return 0
		}
		if created {
			log.Info("created tokens for agents and operators; print one with --print-token admin|viewer|enrollment", "file", *tokensFile)
		}
		cfg.Tokens = tokens
	}
	if *tlsCert != "" || *tlsKey != "" || *tlsClientCA != "" {
		creds, err := auth.ServerTLS(*tlsCert, *tlsKey, *tlsClientCA)
		if err != nil {
			fmt.Fprintf(stderr, "orbweaver-controller: tls: %v\n", err)
			return 1
		}
		cfg.TLS = creds
	}
	if *requireCert && *tlsClientCA == "" {
		fmt.Fprintln(stderr, "--require-agent-cert needs --tls-client-ca")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := controller.Run(ctx, cfg); err != nil {
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
