// Package plugin is the backend of the Orbweaver Grafana datasource: one
// Datasource per configured datasource, holding a pgx pool on the
// Orbweaver database, answering health checks and queries.
package plugin

import (
	"context"
	"fmt"
	"sync"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/backend/instancemgmt"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orbweaver/orbweaver/grafana-plugin/pkg/models"
	"github.com/orbweaver/orbweaver/grafana-plugin/pkg/querybuilder"
)

// ID is the plugin id, as in plugin.json.
const ID = "orbweaver-calls-datasource"

// MinSchemaVersion is the oldest schema (schema_migrations.version) the
// plugin's queries work on: 7 added the identification, origin, template,
// token and credentials columns it reads, 11 the per-minute rollups
// (http_calls_1m) and histogram functions of statistics and service maps,
// 13 the service map's edges (http_edges_1m).
const MinSchemaVersion = 13

// Compile-time checks of the handlers a Datasource serves.
var (
	_ backend.QueryDataHandler      = (*Datasource)(nil)
	_ backend.CheckHealthHandler    = (*Datasource)(nil)
	_ backend.CallResourceHandler   = (*Datasource)(nil)
	_ instancemgmt.InstanceDisposer = (*Datasource)(nil)
)

// Datasource is one configured Orbweaver datasource. Its methods are safe
// for concurrent use; Dispose closes it.
type Datasource struct {
	uid      string
	settings models.Settings
	// settingsErr is why the settings are unusable; health checks and
	// queries report it instead of touching the database.
	settingsErr error
	pool        *pgxpool.Pool

	mu      sync.Mutex
	dialect *querybuilder.Dialect // nil until detected
}

// NewDatasource is the instance factory given to datasource.Manage. Invalid
// settings do not fail it: the health check explains them.
func NewDatasource(_ context.Context, s backend.DataSourceInstanceSettings) (instancemgmt.Instance, error) {
	d := &Datasource{uid: s.UID}
	settings, err := models.Load(s)
	if err != nil {
		d.settingsErr = err
		return d, nil
	}
	d.settings = settings
	cfg, err := pgxpool.ParseConfig(settings.ConnString())
	if err != nil {
		d.settingsErr = fmt.Errorf("settings: %w", err)
		return d, nil
	}
	// NewWithConfig does not connect: a database that is down now does not
	// stop Grafana from loading the datasource.
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		d.settingsErr = fmt.Errorf("create connection pool: %w", err)
		return d, nil
	}
	d.pool = pool
	return d, nil
}

// Dispose closes the pool. Grafana calls it when the settings changed or the
// datasource was deleted.
func (d *Datasource) Dispose() {
	if d.pool != nil {
		d.pool.Close()
	}
}

// dialectOf tells whether the database has TimescaleDB, asking once.
func (d *Datasource) dialectOf(ctx context.Context) (querybuilder.Dialect, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dialect != nil {
		return *d.dialect, nil
	}
	var timescale bool
	if err := d.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')").Scan(&timescale); err != nil {
		return 0, fmt.Errorf("detect timescaledb: %w", err)
	}
	dialect := querybuilder.Postgres
	if timescale {
		dialect = querybuilder.TimescaleDB
	}
	d.dialect = &dialect
	return dialect, nil
}
