// Command orbweaver-agent captures traffic, decodes calls and ships them to
// an Orbweaver controller; with --output it decodes a capture file offline.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/orbweaver/orbweaver/agent"
	"github.com/orbweaver/orbweaver/internal/auth"
	"github.com/orbweaver/orbweaver/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("orbweaver-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		controller    = fs.String("controller", "127.0.0.1:7700", "controller gRPC address")
		name          = fs.String("name", "", "agent name shown by the controller (default: hostname)")
		iface         = fs.String("interface", "", "network interface to capture on (interface mode)")
		file          = fs.String("file", "", "pcap or pcapng file to read (file mode)")
		filter        = fs.String("filter", "", "BPF filter (until the controller sets one)")
		stateDir      = fs.String("state-dir", defaultStateDir(), "directory keeping the agent's identity")
		exitWhenDone  = fs.Bool("exit-when-done", false, "file mode: exit once every call of the file is acknowledged")
		output        = fs.String("output", "", "offline: write calls as JSON Lines to this file ('-' for stdout) instead of contacting a controller (needs --file)")
		metricsListen = fs.String("metrics-listen", "", "serve Prometheus /metrics on this address (e.g. 127.0.0.1:7702; empty: off)")
		token         = fs.String("token", os.Getenv("ORBWEAVER_AGENT_TOKEN"), "agent token (enrollment or per-agent; env ORBWEAVER_AGENT_TOKEN)")
		tokenFile     = fs.String("token-file", "", "file holding the agent token")
		tlsCA         = fs.String("tls-ca", "", "CA (PEM) to verify the controller; enables TLS")
		tlsCert       = fs.String("tls-cert", "", "client certificate (PEM) for mTLS")
		tlsKey        = fs.String("tls-key", "", "client private key (PEM) for mTLS")
		tlsServerName = fs.String("tls-server-name", "", "expected controller name in its certificate (default: from --controller)")
		upload        = fs.String("upload", "", "stream this pcap/pcapng file to the controller, which decodes and stores it (needs an admin --token), then exit")
		logLevel      = fs.String("log-level", "info", "debug, info, warn or error")
		memLimitMiB   = fs.Int64("memory-limit-mib", 0, "Go soft memory limit in MiB (0: derived from parsing.total_buffer_mib + shipping.queue_max_bytes + 64 MiB, unless GOMEMLIMIT is set; -1: leave the runtime alone)")
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

	if *file != "" && *iface != "" {
		fmt.Fprintln(stderr, "--file and --interface are exclusive")
		return 2
	}
	if *output != "" {
		if *file == "" {
			fmt.Fprintln(stderr, "--output needs --file")
			return 2
		}
		return offline(ctx, *file, *filter, *output, stdout, stderr)
	}
	if *upload != "" {
		dial, err := dialOptions(*token, *tokenFile, *tlsCA, *tlsCert, *tlsKey, *tlsServerName)
		if err != nil {
			fmt.Fprintf(stderr, "orbweaver-agent: %v\n", err)
			return 2
		}
		return uploadFile(ctx, *controller, *upload, *name, dial, stdout, stderr)
	}
	if *file == "" && *iface == "" {
		fmt.Fprintln(stderr, "give --interface IFACE (live capture) or --file PATH (read a capture)")
		return 2
	}
	dial, err := dialOptions(*token, *tokenFile, *tlsCA, *tlsCert, *tlsKey, *tlsServerName)
	if err != nil {
		fmt.Fprintf(stderr, "orbweaver-agent: %v\n", err)
		return 2
	}
	a, err := agent.New(agent.Config{
		DialOptions:   dial,
		Controller:    *controller,
		Name:          *name,
		Interface:     *iface,
		File:          *file,
		Filter:        *filter,
		StateDir:      *stateDir,
		ExitWhenDone:  *exitWhenDone,
		Version:       version.Version,
		Logger:        log,
		MetricsListen: *metricsListen,
		MemoryLimit:   memoryLimit(*memLimitMiB),
	})
	if err != nil {
		fmt.Fprintf(stderr, "orbweaver-agent: %v\n", err)
		return 1
	}
	if err := a.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "orbweaver-agent: %v\n", err)
		return 1
	}
	return 0
}

func offline(ctx context.Context, file, filter, output string, stdout, stderr io.Writer) int {
	out := stdout
	if output != "-" {
		f, err := os.Create(output)
		if err != nil {
			fmt.Fprintf(stderr, "orbweaver-agent: %v\n", err)
			return 1
		}
		defer f.Close()
		out = f
	}
	sum, err := agent.RunOffline(ctx, agent.OfflineConfig{File: file, Filter: filter}, out)
	line, _ := json.Marshal(sum)
	fmt.Fprintln(stderr, string(line))
	if err != nil && !errors.Is(err, context.Canceled) {
		return 1
	}
	return 0
}

func uploadFile(ctx context.Context, controller, path, name string, dial []grpc.DialOption, stdout, stderr io.Writer) int {
	conn, err := grpc.NewClient(controller, dial...)
	if err != nil {
		fmt.Fprintf(stderr, "orbweaver-agent: %v\n", err)
		return 1
	}
	defer conn.Close()
	last := time.Now()
	resp, err := agent.Upload(ctx, conn, path, name, func(sent, total int64) {
		if time.Since(last) >= time.Second || sent == total {
			last = time.Now()
			fmt.Fprintf(stderr, "uploaded %d of %d bytes (%.0f%%)\n", sent, total, 100*float64(sent)/float64(max(total, 1)))
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "orbweaver-agent: %v\n", err)
		return 1
	}
	line, _ := protojson.Marshal(resp)
	fmt.Fprintln(stdout, string(line))
	if resp.GetError() != "" {
		return 1
	}
	return 0
}

// dialOptions builds the controller connection's credentials: TLS when a
// CA is given (plaintext otherwise), and the bearer token when given.
func dialOptions(token, tokenFile, ca, cert, key, serverName string) ([]grpc.DialOption, error) {
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	tls := ca != "" || cert != ""
	var opts []grpc.DialOption
	if tls {
		creds, err := auth.ClientTLS(ca, cert, key, serverName)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		opts = append(opts, grpc.WithTransportCredentials(creds))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.BearerToken(token, tls)))
	}
	return opts, nil
}

func defaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/orbweaver-agent"
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "orbweaver-agent")
	}
	return ".orbweaver-agent"
}

// memoryLimit turns --memory-limit-mib into agent.Config.MemoryLimit:
// positive MiB to bytes, 0 (derive) and negative (leave alone) as they are.
func memoryLimit(mib int64) int64 {
	if mib > 0 {
		return mib << 20
	}
	return mib
}
