package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/orbweaver/orbweaver/agent"
	"github.com/orbweaver/orbweaver/internal/auth"
	"github.com/orbweaver/orbweaver/internal/demomesh"
)

// demoRate is the demo load in requests per second on the frontend.
const demoRate = 20

// runDemo starts the demo mesh, an agent capturing it on the loopback
// interface, and a steady load, until ctx ends.
func runDemo(ctx context.Context, controllerAddr string, cfg Config, log *slog.Logger) error {
	mesh, err := demomesh.Start(ctx, demomesh.Config{Logger: log.With("component", "demomesh")})
	if err != nil {
		return fmt.Errorf("demo mesh: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = mesh.Close(cctx)
	}()
	var dial []grpc.DialOption
	if cfg.TLS != nil {
		return errors.New("--demo runs on plaintext loopback; drop the TLS flags")
	}
	if cfg.Tokens != nil {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.BearerToken(cfg.Tokens.EnrollmentToken(), false)))
	}
	a, err := agent.New(agent.Config{
		Controller:  controllerAddr,
		Name:        "demo-agent",
		Interface:   "lo",
		Filter:      mesh.BPFFilter(),
		StateDir:    filepath.Join(cfg.DataDir, "demo-agent"),
		Version:     cfg.Version,
		Logger:      log.With("component", "agent"),
		DialOptions: dial,
	})
	if err != nil {
		return fmt.Errorf("demo agent: %w", err)
	}
	for _, s := range mesh.Services() {
		log.Info("demo service", "name", s.Name, "addr", s.Addr)
	}
	fmt.Printf(`
Orbweaver demo is running: %d req/s on %s, captured on lo by agent "demo-agent".
Try (grpcurl is in .bin/ after make setup; see README "Operating with grpcurl"):
  export PATH=$PWD/.bin:$PATH C=%s
  export TOKEN=$(bin/orbweaver-controller --data-dir %s --print-token admin)
  grpcurl -plaintext $C list
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" $C orbweaver.v1.ControlService/ListAgents
Press Ctrl-C to stop.

`, demoRate, mesh.FrontendURL(), controllerAddr, cfg.DataDir)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(gctx) })
	g.Go(func() error {
		// Give the agent a moment to open its capture before traffic starts.
		select {
		case <-gctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		st, err := mesh.RunLoad(gctx, demoRate)
		log.Info("demo load stopped", "stats", fmt.Sprintf("%+v", st))
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("demo load: %w", err)
		}
		return nil
	})
	return g.Wait()
}
