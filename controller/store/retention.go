package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultHeartbeatRetention is how long heartbeats are kept unless
// SetHeartbeatRetention says otherwise.
const DefaultHeartbeatRetention = 7 * 24 * time.Hour

// batchRetention is how long ingested_batches rows (resend detection) are
// kept: a batch is resent within minutes, never days, after it was sent.
const batchRetention = 7 * 24 * time.Hour

// SetHeartbeatRetention sets how long Run keeps heartbeats (0 keeps them
// forever). Call it before Run.
func (s *Store) SetHeartbeatRetention(d time.Duration) { s.heartbeatRetention = d }

// Prune deletes heartbeats older than the retention and resend-detection
// rows older than a week, as of now. On plain PostgreSQL whole daily
// partitions are dropped (cheap) and the DEFAULT partition is trimmed; on
// TimescaleDB old chunks are dropped.
func (s *Store) Prune(ctx context.Context, now time.Time) error {
	if s.heartbeatRetention > 0 {
		if err := s.pruneHeartbeats(ctx, now.Add(-s.heartbeatRetention)); err != nil {
			return fmt.Errorf("store: prune heartbeats: %w", err)
		}
	}
	if _, err := s.pool.Exec(ctx, "DELETE FROM ingested_batches WHERE received_at < $1", now.Add(-batchRetention)); err != nil {
		return fmt.Errorf("store: prune ingested batches: %w", err)
	}
	return nil
}

func (s *Store) pruneHeartbeats(ctx context.Context, before time.Time) error {
	partitioned, err := s.partitionedTables(ctx)
	if err != nil {
		return err
	}
	if !partitioned["agent_heartbeats"] {
		_, err := s.pool.Exec(ctx, "SELECT drop_chunks('agent_heartbeats', older_than => $1::timestamptz)", before)
		return err
	}
	rows, err := s.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'agent_heartbeats'::regclass AND c.relname LIKE 'agent\_heartbeats\_p%'`)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, name := range names {
		day, err := time.Parse("20060102", strings.TrimPrefix(name, "agent_heartbeats_p"))
		if err != nil || day.AddDate(0, 0, 1).After(before) {
			continue // not ours, or it still holds rows to keep
		}
		if _, err := s.pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("drop %s: %w", name, err)
		}
		s.logger.Info("dropped heartbeat partition past retention", "partition", name)
	}
	_, err = s.pool.Exec(ctx, "DELETE FROM agent_heartbeats_default WHERE time < $1", before)
	return err
}
