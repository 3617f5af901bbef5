// Package querybuilder turns an Orbweaver query (the JSON model the query
// editor and alert rules send) into parameterized PostgreSQL statements.
//
// Every statement it returns is bounded by the query's time range and by a
// row limit, and every value from the query travels as a bind parameter
// ($1, $2, …): the SQL text only ever contains identifiers and expressions
// written in this package. The functions are pure; the statements are
// golden-tested in testdata/.
package querybuilder

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Query types, the values of Query.QueryType.
const (
	TypeCalls      = "calls"
	TypeStats      = "stats"
	TypeServiceMap = "serviceMap"
	TypeCallTree   = "callTree"
	TypeConcurrent = "concurrent"
	TypeAgents     = "agents"
)

// Limits. A query's Limit is clamped to its type's maximum; zero means the
// default.
const (
	DefaultCallsLimit      = 1000
	MaxCallsLimit          = 50000
	DefaultStatsLimit      = 10000
	MaxStatsLimit          = 100000
	DefaultTopN            = 10
	MaxTopN                = 100
	DefaultServiceMapEdges = 200
	// MaxServiceMapEdges keeps the node graph well under Grafana's 1,500
	// node display limit: every edge adds at most two nodes.
	MaxServiceMapEdges = 700
	DefaultTreeDepth   = 5
	MaxTreeDepth       = 10
	DefaultTreeSpans   = 500
	MaxTreeSpans       = 5000
	DefaultAgentsLimit = 1000
	MaxAgentsLimit     = 10000
)

// Query is the query model shared with the frontend. The zero value of a
// field means "not set" (no filter, or the default).
type Query struct {
	// QueryType is one of the Type constants; empty means TypeCalls.
	QueryType string `json:"queryType,omitempty"`

	// Filters on calls, used by calls, stats and the service map.
	Filters

	// Format of a calls query: "table" (default) or "logs".
	Format string `json:"format,omitempty"`
	// Sort of a calls query: "time_desc" (default), "time_asc",
	// "duration_desc" or "duration_asc".
	Sort string `json:"sort,omitempty"`
	// Limit is the maximum number of rows (calls, stats rows, service map
	// edges, call tree spans, agents or heartbeats).
	Limit int `json:"limit,omitempty"`

	// Metrics of a stats query (default ["rate"]): see Metrics().
	Metrics []string `json:"metrics,omitempty"`
	// GroupBy dimensions of a stats query: see Dimensions().
	GroupBy []string `json:"groupBy,omitempty"`
	// TopN is the number of series (groups with the most calls) a grouped
	// stats query keeps.
	TopN int `json:"topN,omitempty"`
	// Exact makes stats and service map queries read the calls even when
	// the per-minute rollups cover them: percentiles exact instead of
	// within PercentileRelativeError, and slower over long ranges.
	Exact bool `json:"exact,omitempty"`

	// CallID is the call of a call tree or concurrent calls query. It is a
	// string so that data links can pass ${__value.raw}.
	CallID string `json:"callId,omitempty"`
	// TraceID (W3C, 32 hex digits) picks the root of a call tree when CallID
	// is empty: the first call in the range whose traceparent carries it.
	TraceID string `json:"traceId,omitempty"`
	// MaxDepth bounds the call tree's recursion.
	MaxDepth int `json:"maxDepth,omitempty"`

	// AgentView of an agents query: "table" (default) or "heartbeats".
	AgentView string `json:"agentView,omitempty"`
}

// Filters select calls. Empty fields do not filter. Fields of type List or
// IntList take several values (any of them matches) and still accept the
// single JSON string or number of older queries.
type Filters struct {
	// AgentID holds UUIDs of the agents that captured the call.
	AgentID List `json:"agentId,omitempty"`
	// ClientIP and ServerIP hold addresses or CIDR prefixes.
	ClientIP   List `json:"clientIp,omitempty"`
	ClientPort int  `json:"clientPort,omitempty"`
	ServerIP   List `json:"serverIp,omitempty"`
	ServerPort int  `json:"serverPort,omitempty"`
	// Server holds "ip:port" servers, as values/servers lists them and as
	// stats group them.
	Server List `json:"server,omitempty"`
	// ServerName matches the Host header exactly.
	ServerName List `json:"serverName,omitempty"`
	Method     List `json:"method,omitempty"`
	// PathPrefix keeps paths starting with it; PathRegex is a PostgreSQL
	// regular expression; Search is a case-insensitive substring of the path.
	PathPrefix string `json:"pathPrefix,omitempty"`
	PathRegex  string `json:"pathRegex,omitempty"`
	Search     string `json:"search,omitempty"`
	// Status holds exact HTTP statuses; StatusClass holds "1xx" … "5xx",
	// or "none" for calls without a response.
	Status      IntList `json:"status,omitempty"`
	StatusClass List    `json:"statusClass,omitempty"`
	// MinDurationMs and MaxDurationMs bound the call duration (inclusive).
	MinDurationMs *float64 `json:"minDurationMs,omitempty"`
	MaxDurationMs *float64 `json:"maxDurationMs,omitempty"`

	// Derived call fields (migration 0007).

	// Identification holds exact identifications (Basic-auth login or JWT
	// sub).
	Identification List `json:"identification,omitempty"`
	// Origin holds addresses or CIDR prefixes of the original client
	// (X-Forwarded-For, Forwarded, else the client IP).
	Origin List `json:"origin,omitempty"`
	// Template holds exact route templates; TemplatePrefix keeps templates
	// starting with it; TemplateRegex is a PostgreSQL regular expression.
	Template       List   `json:"template,omitempty"`
	TemplatePrefix string `json:"templatePrefix,omitempty"`
	TemplateRegex  string `json:"templateRegex,omitempty"`
	// TokenProblem holds "not_yet_valid" and/or "expired": calls whose JWT
	// had any of these problems at capture time.
	TokenProblem List `json:"tokenProblem,omitempty"`
	// MultipleCredentials keeps the calls with (true) or without (false)
	// several credentials; calls without a request have neither.
	MultipleCredentials *bool `json:"multipleCredentials,omitempty"`
}

// TimeRange is the half-open interval [From, To) of call start times.
type TimeRange struct {
	From, To time.Time
}

// Dialect says which time bucketing function the database has.
type Dialect int

const (
	// Postgres buckets with date_bin (PostgreSQL 14+).
	Postgres Dialect = iota
	// TimescaleDB buckets with time_bucket.
	TimescaleDB
)

// Statement is one parameterized SQL statement.
type Statement struct {
	SQL  string
	Args []any
	// Limit is the row limit the statement applies; Capped tells that the
	// query asked for more and was cut down to it.
	Limit  int
	Capped bool
	// Percentiles, when set, are result columns the statement leaves NULL:
	// the caller computes them from the duration histogram in column
	// HistogramColumn (FinishPercentiles), which it then drops. Statements
	// that read the rollups (see rollup.go) do this.
	Percentiles []Percentile
}

// ErrInvalid is wrapped by every error about the query itself (as opposed
// to the database), so callers can answer "bad request".
var ErrInvalid = errors.New("invalid query")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// Parse decodes a query model. Unknown fields are ignored (Grafana adds its
// own: refId, datasource, intervalMs, …).
func Parse(raw []byte) (Query, error) {
	var q Query
	if len(raw) == 0 {
		return q, nil
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		return Query{}, invalid("decode query: %v", err)
	}
	return q, nil
}

// clamp returns def when v ≤ 0, else v capped at max, and whether it was
// capped.
func clamp(v, def, max int) (int, bool) {
	switch {
	case v <= 0:
		return def, false
	case v > max:
		return max, true
	}
	return v, false
}

func (tr TimeRange) validate() error {
	if tr.From.IsZero() || tr.To.IsZero() || !tr.From.Before(tr.To) {
		return invalid("time range %s – %s is empty", tr.From.Format(time.RFC3339), tr.To.Format(time.RFC3339))
	}
	return nil
}
