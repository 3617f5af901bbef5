package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/orbweaver/orbweaver/agent"
	"github.com/orbweaver/orbweaver/internal/demomesh"
)

// demoRate is the demo load in requests per second on the frontend.
const demoRate = 20

// runDemo starts the demo mesh, an agent capturing it on the loopback
// interface, and a steady load, until ctx ends.
func runDemo(ctx context.Context, controllerAddr, dataDir, version string, log *slog.Logger) error {
	mesh, err := demomesh.Start(ctx, demomesh.Config{Logger: log.With("component", "demomesh")})
	if err != nil {
		return fmt.Errorf("demo mesh: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = mesh.Close(cctx)
	}()
	a, err := agent.New(agent.Config{
		Controller: controllerAddr,
		Name:       "demo-agent",
		Interface:  "lo",
		Filter:     mesh.BPFFilter(),
		StateDir:   filepath.Join(dataDir, "demo-agent"),
		Version:    version,
		Logger:     log.With("component", "agent"),
	})
	if err != nil {
		return fmt.Errorf("demo agent: %w", err)
	}
	for _, s := range mesh.Services() {
		log.Info("demo service", "name", s.Name, "addr", s.Addr)
	}
	fmt.Printf(`
Orbweaver demo is running: %d req/s on %s, captured on lo by agent "demo-agent".
Try (grpcurl is in .bin/ after make setup):
  grpcurl -plaintext %s list
  grpcurl -plaintext %s orbweaver.v1.ControlService/ListAgents
  grpcurl -plaintext -d '{"agent":"demo-agent"}' %s orbweaver.v1.ControlService/GetConfig
Press Ctrl-C to stop.

`, demoRate, mesh.FrontendURL(), controllerAddr, controllerAddr, controllerAddr)

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
