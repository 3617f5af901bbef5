package querybuilder

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// params collects bind parameters; arg returns the placeholder of a new one.
type params struct {
	args []any
}

func (p *params) arg(v any) string {
	p.args = append(p.args, v)
	return "$" + strconv.Itoa(len(p.args))
}

// Expressions over one http_calls row. They are the only place that knows
// how a concept maps to columns, so new columns (identification, origin,
// template) slot in here.
const (
	// callStart is when the call began, callEnd when it ended (the start for
	// calls that have no later timestamp).
	callStart = "coalesce(request_start, time)"
	callEnd   = "coalesce(response_end, response_start, request_end, request_start, time)"
	// isError is true for calls answered 5xx or not answered.
	isError = "(status IS NULL OR status >= 500)"
	// durationMs is the duration in milliseconds, NULL when unknown.
	durationMs = "duration_us / 1000.0"
	// totalBytes is every header and body byte of the call.
	totalBytes = "(coalesce(request_header_size, 0) + coalesce(request_body_size, 0) + coalesce(response_header_size, 0) + coalesce(response_body_size, 0))"
)

// Dimensions returns the names a stats query can group by.
func Dimensions() []string {
	return []string{"server", "client", "host", "method", "status", "agent"}
}

// dimensionExpr is the text expression of a group-by dimension.
func dimensionExpr(name string) (string, bool) {
	switch name {
	case "server":
		return "host(server_ip) || ':' || server_port", true
	case "client":
		return "host(client_ip)", true
	case "host":
		return "host", true
	case "method":
		return "method", true
	case "status":
		return "coalesce(status::text, 'none')", true
	case "agent":
		return "agent_id::text", true
	}
	return "", false
}

// Metrics returns the names a stats query can compute.
func Metrics() []string {
	return []string{"rate", "error_rate", "p50", "p90", "p95", "p99", "bytes"}
}

// metricExpr is the aggregate of a metric over one time bucket; seconds is
// the placeholder of the bucket width in seconds.
func metricExpr(name, seconds string) (expr, column string, ok bool) {
	percentile := func(p string) string {
		return "percentile_cont(" + p + ") WITHIN GROUP (ORDER BY " + durationMs + ")"
	}
	switch name {
	case "rate":
		return "count(*) / " + seconds, "rate", true
	case "error_rate":
		return "avg(CASE WHEN " + isError + " THEN 1.0 ELSE 0.0 END)::float8", "error_rate", true
	case "p50":
		return percentile("0.5"), "p50_ms", true
	case "p90":
		return percentile("0.9"), "p90_ms", true
	case "p95":
		return percentile("0.95"), "p95_ms", true
	case "p99":
		return percentile("0.99"), "p99_ms", true
	case "bytes":
		return "sum(" + totalBytes + ")::float8", "bytes", true
	}
	return "", "", false
}

// where returns the conditions selecting the calls in tr that match f.
func (p *params) where(f Filters, tr TimeRange) ([]string, error) {
	conds := []string{"time >= " + p.arg(tr.From), "time < " + p.arg(tr.To)}
	if f.AgentID != "" {
		var err error
		if conds, err = agentCond(p, conds, "agent_id", f.AgentID); err != nil {
			return nil, err
		}
	}
	for _, ip := range []struct{ col, value string }{{"client_ip", f.ClientIP}, {"server_ip", f.ServerIP}} {
		if ip.value == "" {
			continue
		}
		prefix, err := parsePrefix(ip.value)
		if err != nil {
			return nil, invalid("%s %q is not an IP address or CIDR prefix", ip.col, ip.value)
		}
		conds = append(conds, ip.col+" <<= "+p.arg(prefix)+"::inet")
	}
	for _, port := range []struct {
		col   string
		value int
	}{{"client_port", f.ClientPort}, {"server_port", f.ServerPort}} {
		if port.value == 0 {
			continue
		}
		if port.value < 0 || port.value > 65535 {
			return nil, invalid("%s %d is not a port", port.col, port.value)
		}
		conds = append(conds, port.col+" = "+p.arg(int32(port.value)))
	}
	if f.ServerName != "" {
		conds = append(conds, "host = "+p.arg(f.ServerName))
	}
	if f.Method != "" {
		conds = append(conds, "method = "+p.arg(strings.ToUpper(f.Method)))
	}
	if f.PathPrefix != "" {
		conds = append(conds, "starts_with(path, "+p.arg(f.PathPrefix)+")")
	}
	if f.PathRegex != "" {
		conds = append(conds, "path ~ "+p.arg(f.PathRegex))
	}
	if f.Search != "" {
		conds = append(conds, "strpos(lower(path), lower("+p.arg(f.Search)+")) > 0")
	}
	if f.Status != 0 {
		if f.Status < 100 || f.Status > 999 {
			return nil, invalid("status %d is not an HTTP status", f.Status)
		}
		conds = append(conds, "status = "+p.arg(int16(f.Status)))
	}
	switch c := strings.ToLower(f.StatusClass); c {
	case "":
	case "none":
		conds = append(conds, "status IS NULL")
	case "1xx", "2xx", "3xx", "4xx", "5xx":
		low := int16(c[0]-'0') * 100
		conds = append(conds, "status >= "+p.arg(low)+" AND status < "+p.arg(low+100))
	default:
		return nil, invalid("status class %q is not one of 1xx, 2xx, 3xx, 4xx, 5xx, none", f.StatusClass)
	}
	if f.MinDurationMs != nil {
		conds = append(conds, "duration_us >= "+p.arg(int64(*f.MinDurationMs*1000)))
	}
	if f.MaxDurationMs != nil {
		conds = append(conds, "duration_us <= "+p.arg(int64(*f.MaxDurationMs*1000)))
	}
	return conds, nil
}

// parsePrefix accepts "10.0.0.1", "10.0.0.0/8" or "::1" and returns the
// canonical prefix text.
func parsePrefix(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return "", err
		}
		return pfx.Masked().String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", err
	}
	return a.Unmap().String(), nil
}

// and joins conditions for a WHERE clause, one per line.
func and(conds []string, indent string) string {
	return strings.Join(conds, "\n"+indent+"AND ")
}

// parseAgentID checks that s is a UUID and returns its canonical form.
func parseAgentID(s string) (string, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return "", invalid("agent id %q is not a UUID", s)
	}
	return id.String(), nil
}
