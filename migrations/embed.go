// Package migrations holds Orbweaver's database schema as numbered SQL
// files, NNNN_name.sql, applied in order by controller/store.Migrate. Each
// file runs once, in its own transaction, and is recorded in the
// schema_migrations table; never edit a file that has been released, add a
// new one.
//
// The schema uses TimescaleDB hypertables when the extension can be
// created and plain PostgreSQL range partitioning by time otherwise; the
// same queries work on both. docs/schema.md documents every table.
package migrations

import "embed"

// FS holds the migration files at its root.
//
//go:embed *.sql
var FS embed.FS
