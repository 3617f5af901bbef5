// Package metricsserver serves a Prometheus registry over HTTP: /metrics
// in the Prometheus exposition formats and /healthz for liveness probes.
package metricsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// shutdownTimeout bounds the graceful shutdown once ctx is done; open
// connections are then closed.
const shutdownTimeout = 5 * time.Second

// Run listens on addr (host:port; ":0" picks a port) and serves reg until
// ctx is done, then shuts down gracefully. It returns nil after a shutdown
// caused by ctx, and an error wrapping the cause when listening or serving
// fails ("metrics listen on ADDR: ...").
func Run(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listen on %s: %w", addr, err)
	}
	return Serve(ctx, ln, reg, log)
}

// Serve is Run on a listener the caller opened (tests use 127.0.0.1:0).
// Serve owns ln and closes it.
func Serve(ctx context.Context, ln net.Listener, reg *prometheus.Registry, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := &http.Server{
		Handler:           Handler(reg, log),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("metrics server listening", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("metrics serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		log.Warn("metrics server shutdown timed out; connections closed", "err", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics serve on %s: %w", ln.Addr(), err)
	}
	return nil
}

// Handler returns the mux Serve uses: /metrics for reg and /healthz, which
// answers 200 "ok" while the process serves HTTP.
func Handler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          promLogger{log},
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg, // counts promhttp's own errors
		Timeout:           10 * time.Second,
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// promLogger adapts slog to promhttp.Logger.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) { l.log.Warn("metrics gather", "err", fmt.Sprint(v...)) }
