// Package store is the controller's PostgreSQL storage: schema migrations,
// time partitions, call batches stored exactly once, agents, their configs
// and heartbeats. It uses a pgx connection pool; a Store is safe for
// concurrent use.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	// ErrNotFound: no agent (or agent config) has the given id or name.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: several agents have the given name.
	ErrAmbiguous = errors.New("ambiguous")
)

// partitionInterval is how often Run creates partitions ahead.
const partitionInterval = time.Hour

// Store is the controller's database. Create it with Open.
type Store struct {
	pool               *pgxpool.Pool
	logger             *slog.Logger
	heartbeatRetention time.Duration
	encoders           sync.Pool // *copyEncoder, reused across batches
	onFold             func(rows int64, took time.Duration, err error)
}

// Open connects to databaseURL, applies pending migrations and creates the
// partitions around now. A nil logger discards messages.
func Open(ctx context.Context, databaseURL string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("store: parse database url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	s := &Store{pool: pool, logger: logger, heartbeatRetention: DefaultHeartbeatRetention}
	s.encoders.New = func() any { return &copyEncoder{} }
	if err := s.Migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := s.EnsurePartitions(ctx, time.Now()); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// SetFoldObserver has Run report every fold of the pending service map
// edges: the rows folded, the time it took and its error. Call it before
// Run.
func (s *Store) SetFoldObserver(f func(rows int64, took time.Duration, err error)) { s.onFold = f }

// Close closes the pool, waiting for connections in use to be released.
func (s *Store) Close() { s.pool.Close() }

// Pool returns the connection pool, for queries this package does not
// offer.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Run creates partitions ahead and prunes data past retention (see Prune)
// every hour, and folds the pending service map edges (see FoldEdges) every
// foldInterval, until ctx is done, then returns nil. Failures are logged
// and retried at the next tick.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(partitionInterval)
	defer t.Stop()
	fold := time.NewTicker(foldInterval)
	defer fold.Stop()
	folds := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-fold.C:
			start := time.Now()
			n, err := s.FoldEdges(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				s.logger.Error("fold edges", "err", err)
			}
			if s.onFold != nil {
				s.onFold(n, time.Since(start), err)
			}
			if folds++; folds%vacuumPendingEvery == 0 {
				// Every fold deletes what it folds: give the space back
				// before autovacuum (once a minute at best) would.
				if _, err := s.pool.Exec(ctx, "VACUUM http_edges_1m_pending"); err != nil && ctx.Err() == nil {
					s.logger.Error("vacuum pending edges", "err", err)
				}
			}
		case now := <-t.C:
			if err := s.EnsurePartitions(ctx, now); err != nil && ctx.Err() == nil {
				s.logger.Error("ensure partitions", "err", err)
			}
			if err := s.Prune(ctx, now); err != nil && ctx.Err() == nil {
				s.logger.Error("prune", "err", err)
			}
		}
	}
}
