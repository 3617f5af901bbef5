package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orbweaver/orbweaver/grafana-plugin/pkg/querybuilder"
)

// CheckHealth connects, checks the schema version and that the calls table
// can be read, and says what is wrong in an admin's words.
func (d *Datasource) CheckHealth(ctx context.Context, _ *backend.CheckHealthRequest) (*backend.CheckHealthResult, error) {
	fail := func(format string, a ...any) (*backend.CheckHealthResult, error) {
		return &backend.CheckHealthResult{Status: backend.HealthStatusError, Message: fmt.Sprintf(format, a...)}, nil
	}
	if d.settingsErr != nil {
		return fail("The datasource settings are incomplete: %v.", d.settingsErr)
	}
	var version *int32
	err := d.pool.QueryRow(ctx, "SELECT max(version) FROM schema_migrations").Scan(&version)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
			return fail("Connected to database %q, but it has no Orbweaver schema (no schema_migrations table). "+
				"Point the datasource at the database the Orbweaver controller uses, or start the controller once so it creates the schema.", d.settings.Database)
		}
		return fail("%s", d.explain(err))
	}
	if version == nil || *version < MinSchemaVersion {
		v := int32(0)
		if version != nil {
			v = *version
		}
		return fail("The Orbweaver schema in database %q is at version %d; this plugin needs version %d or later. Upgrade the Orbweaver controller, which migrates the schema when it starts.",
			d.settings.Database, v, MinSchemaVersion)
	}
	if _, err := d.pool.Exec(ctx, "SELECT 1 FROM http_calls LIMIT 0"); err != nil {
		return fail("The schema is at version %d, but reading the calls failed: %s", *version, d.explain(err))
	}
	dialect, err := d.dialectOf(ctx)
	if err != nil {
		return fail("%s", d.explain(err))
	}
	storage := "PostgreSQL"
	if dialect == querybuilder.TimescaleDB {
		storage = "TimescaleDB"
	}
	return &backend.CheckHealthResult{
		Status:  backend.HealthStatusOk,
		Message: fmt.Sprintf("Connected to %s as %s: Orbweaver schema version %d on %s.", d.settings.Address(), d.settings.User, *version, storage),
	}, nil
}

// explain turns a connection or query error into a sentence for a Grafana
// user, without the password or the SQL.
func (d *Datasource) explain(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000": // invalid_password, invalid_authorization_specification
			return fmt.Sprintf("PostgreSQL at %s refused user %q: %s. Check the user and password.", d.settings.Address(), d.settings.User, pgErr.Message)
		case "3D000": // invalid_catalog_name
			return fmt.Sprintf("Database %q does not exist on %s. Check the database name.", d.settings.Database, d.settings.Address())
		case "42501": // insufficient_privilege
			return fmt.Sprintf("User %q may not read the Orbweaver tables (%s). Grant it the controller's read-only role.", d.settings.User, pgErr.Message)
		case "57014": // query_canceled (statement_timeout)
			return fmt.Sprintf("The query took longer than %s and was cancelled. Narrow the time range or the filters.", d.settings.QueryTimeout)
		}
		return fmt.Sprintf("PostgreSQL error %s: %s.", pgErr.Code, pgErr.Message)
	}
	var netErr net.Error
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.As(err, &netErr) {
		return fmt.Sprintf("Cannot reach PostgreSQL at %s (%v). Check the host and port, and that the server accepts connections from Grafana.", d.settings.Address(), err)
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return fmt.Sprintf("Cannot connect to PostgreSQL at %s: %v.", d.settings.Address(), err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return "The request was cancelled before PostgreSQL answered."
	}
	return err.Error()
}
