// Package models loads the datasource settings Grafana stores for an
// Orbweaver datasource. The names follow Grafana's built-in PostgreSQL
// datasource: url (host:port) and user at the top level, jsonData.database
// and jsonData.sslmode, secureJsonData.password.
package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
)

// Defaults of optional settings.
const (
	DefaultPort         = "5432"
	DefaultSSLMode      = "require"
	DefaultQueryTimeout = 30 * time.Second
	DefaultMaxConns     = 4
)

// Settings of one datasource instance. Load it with Load.
type Settings struct {
	// Host and Port of the PostgreSQL server.
	Host string
	Port string
	User string
	// Password comes from secureJsonData; never log it.
	Password string
	Database string
	// SSLMode is a libpq sslmode: disable, require, verify-ca, verify-full…
	SSLMode string
	// QueryTimeout is the server-side statement_timeout of every query.
	QueryTimeout time.Duration
	// MaxConns is the size of the connection pool.
	MaxConns int32
}

// jsonData is the non-secret part of the settings.
type jsonData struct {
	Database            string `json:"database"`
	SSLMode             string `json:"sslmode"`
	QueryTimeoutSeconds int    `json:"queryTimeoutSeconds"`
	MaxOpenConns        int32  `json:"maxOpenConns"`
}

// validSSLMode tells whether mode is an sslmode libpq and pgx accept.
func validSSLMode(mode string) bool {
	switch mode {
	case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
		return true
	}
	return false
}

// Load reads and validates the settings of a datasource instance.
func Load(s backend.DataSourceInstanceSettings) (Settings, error) {
	var jd jsonData
	if len(s.JSONData) > 0 {
		if err := json.Unmarshal(s.JSONData, &jd); err != nil {
			return Settings{}, fmt.Errorf("settings: read jsonData: %w", err)
		}
	}
	out := Settings{
		User:         s.User,
		Password:     s.DecryptedSecureJSONData["password"],
		Database:     jd.Database,
		SSLMode:      jd.SSLMode,
		QueryTimeout: DefaultQueryTimeout,
		MaxConns:     DefaultMaxConns,
	}
	if out.Database == "" {
		out.Database = s.Database //nolint:staticcheck // older provisioning puts it at the top level
	}
	if out.SSLMode == "" {
		out.SSLMode = DefaultSSLMode
	}
	if !validSSLMode(out.SSLMode) {
		return Settings{}, fmt.Errorf("settings: sslmode %q is not one of disable, allow, prefer, require, verify-ca, verify-full", out.SSLMode)
	}
	if jd.QueryTimeoutSeconds > 0 {
		out.QueryTimeout = time.Duration(jd.QueryTimeoutSeconds) * time.Second
	}
	if jd.MaxOpenConns > 0 {
		out.MaxConns = jd.MaxOpenConns
	}
	if s.URL == "" {
		return Settings{}, errors.New("settings: the host (url) is empty: set it to host:port of the PostgreSQL server")
	}
	host, port, err := net.SplitHostPort(s.URL)
	if err != nil {
		// No port: the whole value is the host.
		host, port = s.URL, DefaultPort
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil || host == "" {
		return Settings{}, fmt.Errorf("settings: url %q is not host:port", s.URL)
	}
	out.Host, out.Port = host, port
	if out.User == "" {
		return Settings{}, errors.New("settings: the user is empty")
	}
	if out.Database == "" {
		return Settings{}, errors.New("settings: the database is empty")
	}
	return out, nil
}

// ConnString is the PostgreSQL URL of the settings, password included.
// Sessions are read-only, and every statement is limited to QueryTimeout.
// JIT compilation is off: the plugin's statements run in milliseconds
// (rollups, indexes), and compiling one costs tens of milliseconds whenever
// the planner's estimate crosses jit_above_cost (recursive call trees do).
func (s Settings) ConnString() string {
	u := url.URL{
		Scheme: "postgres",
		User:   url.UserPassword(s.User, s.Password),
		Host:   net.JoinHostPort(s.Host, s.Port),
		Path:   "/" + s.Database,
	}
	q := url.Values{}
	q.Set("sslmode", s.SSLMode)
	q.Set("application_name", "orbweaver-grafana")
	q.Set("default_transaction_read_only", "on")
	q.Set("statement_timeout", strconv.FormatInt(s.QueryTimeout.Milliseconds(), 10))
	q.Set("jit", "off")
	q.Set("pool_max_conns", strconv.Itoa(int(s.MaxConns)))
	u.RawQuery = q.Encode()
	return u.String()
}

// Address is host:port, for messages.
func (s Settings) Address() string { return net.JoinHostPort(s.Host, s.Port) }
