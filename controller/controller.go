// Package controller wires the Orbweaver controller: storage (an external
// Postgres or a private embedded cluster), the agent stream service, the
// operators' control API with server reflection, and the optional demo.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/orbweaver/orbweaver/agent/capture"
	"github.com/orbweaver/orbweaver/controller/agents"
	"github.com/orbweaver/orbweaver/controller/control"
	"github.com/orbweaver/orbweaver/controller/metrics"
	"github.com/orbweaver/orbweaver/controller/store"
	"github.com/orbweaver/orbweaver/controller/upload"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/auth"
	"github.com/orbweaver/orbweaver/internal/metricsserver"
	"github.com/orbweaver/orbweaver/internal/pgcluster"
)

// Config is the controller's configuration (flags).
type Config struct {
	// Listen is the gRPC address (default 127.0.0.1:7700).
	Listen string
	// DatabaseURL of an external Postgres; empty starts the embedded one.
	DatabaseURL string
	// DataDir holds the embedded database and demo state.
	DataDir string
	// Demo also runs a demo mesh of services and an agent capturing them.
	Demo    bool
	Version string
	Logger  *slog.Logger
	// OnReady, when set, is called with the bound address once the gRPC
	// server accepts connections.
	OnReady func(addr net.Addr)
	// MetricsListen, when set, serves Prometheus /metrics there.
	MetricsListen string
	// Tokens authenticate agents and operators; nil turns authentication
	// off (tests, or --no-auth for local development).
	Tokens *auth.Tokens
	// TLS, when set, secures the gRPC port.
	TLS credentials.TransportCredentials
	// HeartbeatRetention is how long agent heartbeats are kept (0: the
	// store's default, 7 days; negative: forever).
	HeartbeatRetention time.Duration
	// RequireAgentClientCert makes agents present a client certificate
	// (mTLS); TLS must verify client certificates.
	RequireAgentClientCert bool
}

// Run serves until ctx ends, then stops gracefully.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:7700"
	}
	dbURL := cfg.DatabaseURL
	if dbURL == "" {
		if cfg.DataDir == "" {
			return errors.New("data dir is required for the embedded database (--data-dir)")
		}
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		log.Info("no --database-url: starting the embedded PostgreSQL", "data_dir", filepath.Join(cfg.DataDir, "postgres"))
		cluster, err := pgcluster.Start(ctx, pgcluster.Options{DataDir: filepath.Join(cfg.DataDir, "postgres"), Logger: log})
		if err != nil {
			return fmt.Errorf("embedded database: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cluster.Stop(sctx); err != nil {
				log.Error("stop embedded database", "err", err)
			} else {
				log.Info("embedded database stopped")
			}
		}()
		dbURL = cluster.URL()
		urlFile := filepath.Join(cfg.DataDir, "database-url")
		if err := os.WriteFile(urlFile, []byte(dbURL+"\n"), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", urlFile, err)
		}
		defer os.Remove(urlFile)
		log.Info("embedded PostgreSQL ready", "url", redactURL(dbURL), "url_file", urlFile)
	}

	st, err := store.Open(ctx, dbURL, log)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	switch {
	case cfg.HeartbeatRetention > 0:
		st.SetHeartbeatRetention(cfg.HeartbeatRetention)
	case cfg.HeartbeatRetention < 0:
		st.SetHeartbeatRetention(0)
	}

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	reg := agents.NewRegistry()
	met := metrics.New(reg.Connected)
	var opts []grpc.ServerOption
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(cfg.TLS))
	}
	if cfg.Tokens != nil {
		opts = append(opts, cfg.Tokens.ServerOptions(auth.ServerPolicy{RequireAgentClientCert: cfg.RequireAgentClientCert, Logger: log})...)
	} else {
		log.Warn("authentication is off: any client may connect")
	}
	st.SetFoldObserver(met.EdgesFolded)
	agentSvc := agents.NewService(st, reg, log, met)
	srv := newGRPCServer(st, agentSvc, reg, log, opts...)
	log.Info("controller listening", "addr", lis.Addr().String(), "version", cfg.Version)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve grpc: %w", err)
		}
		return nil
	})
	g.Go(func() error { return st.Run(gctx) })
	// The batch writers outlive the graceful stop, so that the batches
	// received before it are stored and acknowledged.
	writersCtx, stopWriters := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWriters()
	g.Go(func() error { return agentSvc.Run(writersCtx) })
	if cfg.MetricsListen != "" {
		g.Go(func() error { return metricsserver.Run(gctx, cfg.MetricsListen, met.Registry(), log) })
	}
	g.Go(func() error {
		<-gctx.Done()
		stopGracefully(srv, 5*time.Second)
		stopWriters()
		return nil
	})
	if cfg.OnReady != nil {
		cfg.OnReady(lis.Addr())
	}
	if cfg.Demo {
		g.Go(func() error { return runDemo(gctx, lis.Addr().String(), cfg, log) })
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func newGRPCServer(st *store.Store, agentSvc *agents.Service, reg *agents.Registry, log *slog.Logger, opts ...grpc.ServerOption) *grpc.Server {
	srv := grpc.NewServer(append(opts,
		// Ping idle agents so a dead peer (host gone, cable cut) is noticed
		// within ~30 s and the agent shows as not visible.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(64<<20),
	)...)
	orbweaverv1.RegisterAgentServiceServer(srv, agentSvc)
	uploads := upload.New(st, upload.Config{Logger: log.With("component", "upload")})
	orbweaverv1.RegisterControlServiceServer(srv, control.NewService(st, reg, compileFilter, uploads, log))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv
}

func compileFilter(expr string, snaplen int) error {
	return capture.ValidateFilter(layers.LinkTypeEthernet, snaplen, expr)
}

// stopGracefully lets open RPCs finish for up to d, then cuts them.
func stopGracefully(srv *grpc.Server, d time.Duration) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		srv.Stop()
	}
}

func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}
