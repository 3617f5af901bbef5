package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// partitionLockKey serializes partition creation between controller
// replicas (a transaction advisory lock).
const partitionLockKey int64 = 0x6f72627765617602

// timeSeriesTables are partitioned by day on time without TimescaleDB.
var timeSeriesTables = []string{"http_calls", "agent_heartbeats"}

// EnsurePartitions creates the missing daily partitions of the time-series
// tables for the UTC days from yesterday to two days after now. Rows of
// those days already in the DEFAULT partition are moved into the new
// partition. It does nothing for tables that are not partitioned
// (TimescaleDB hypertables).
func (s *Store) EnsurePartitions(ctx context.Context, now time.Time) error {
	partitioned, err := s.partitionedTables(ctx)
	if err != nil {
		return fmt.Errorf("store: ensure partitions: %w", err)
	}
	today := now.UTC().Truncate(24 * time.Hour)
	for _, table := range timeSeriesTables {
		if !partitioned[table] {
			continue
		}
		for d := -1; d <= 2; d++ {
			if err := s.ensurePartition(ctx, table, today.AddDate(0, 0, d)); err != nil {
				return fmt.Errorf("store: ensure partitions: %w", err)
			}
		}
	}
	return nil
}

// partitionedTables tells which time-series tables are declaratively
// partitioned.
func (s *Store) partitionedTables(ctx context.Context) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT c.relname FROM pg_partitioned_table p
		JOIN pg_class c ON c.oid = p.partrelid
		WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY ($1)`, timeSeriesTables)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m, nil
}

// relationExists tells whether a relation named $1 is in the current schema.
const relationExists = "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1 AND relnamespace = current_schema()::regnamespace)"

// partitionName is the name of table's partition for the UTC day from.
func partitionName(table string, from time.Time) string {
	return table + "_p" + from.Format("20060102")
}

// ensurePartition creates table's partition for [from, from+1 day) unless
// it exists. The new partition is built apart, filled with the rows of its
// range found in the DEFAULT partition, and attached; attaching locks the
// parent less than CREATE TABLE ... PARTITION OF.
func (s *Store) ensurePartition(ctx context.Context, table string, from time.Time) error {
	name := partitionName(table, from)
	var exists bool
	if err := s.pool.QueryRow(ctx, relationExists, name).Scan(&exists); err != nil {
		return fmt.Errorf("partition %s: %w", name, err)
	}
	if exists {
		return nil
	}
	to := from.AddDate(0, 0, 1)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", partitionLockKey); err != nil {
			return err
		}
		// A query on pg_class, not to_regclass: the catalog cache may
		// not yet know of a partition created while we waited.
		if err := tx.QueryRow(ctx, relationExists, name).Scan(&exists); err != nil || exists {
			return err
		}
		// Identifiers come from constants and a formatted date; bounds from
		// time.Time. DDL takes no parameters.
		ident := pgx.Identifier{name}.Sanitize()
		parent := pgx.Identifier{table}.Sanitize()
		def := pgx.Identifier{table + "_default"}.Sanitize()
		lo, hi := pgTimestamp(from), pgTimestamp(to)
		stmts := []string{
			fmt.Sprintf("CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS)", ident, parent),
			fmt.Sprintf("WITH moved AS (DELETE FROM %s WHERE time >= '%s' AND time < '%s' RETURNING *) INSERT INTO %s SELECT * FROM moved",
				def, lo, hi, ident),
			fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM ('%s') TO ('%s')", parent, ident, lo, hi),
		}
		for _, sql := range stmts {
			if _, err := tx.Exec(ctx, sql); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create partition %s: %w", name, err)
	}
	s.logger.Info("created partition", "partition", name, "from", from, "to", to)
	return nil
}

// pgTimestamp formats t as a timestamptz literal in UTC.
func pgTimestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04:05") + "+00"
}
