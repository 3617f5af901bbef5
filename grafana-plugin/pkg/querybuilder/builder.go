package querybuilder

import (
	"fmt"
	"net/netip"
	"slices"
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
// how a concept maps to columns.
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
	return []string{"server", "client", "host", "method", "status", "agent", "template", "identification", "origin"}
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
	case "template":
		// Calls without a request have no template.
		return "coalesce(nullif(template, ''), 'none')", true
	case "identification":
		// Anonymous calls (no identification is ever stored empty).
		return "coalesce(identification, '')", true
	case "origin":
		return "coalesce(host(origin), 'none')", true
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
		return "(count(*) FILTER (WHERE " + isError + "))::float8 / count(*)", "error_rate", true
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
	more, err := p.filters(f)
	if err != nil {
		return nil, err
	}
	return append(conds, more...), nil
}

// filters returns the conditions selecting the calls that match f. A
// filter with several values is one condition on one array parameter
// (col = ANY($n)). Conditions on text patterns come last, prefixes before
// regular expressions: PostgreSQL evaluates a scan's conditions in order,
// so the cheap comparisons discard most calls first.
func (p *params) filters(f Filters) ([]string, error) {
	var conds []string
	if len(f.AgentID) > 0 {
		var err error
		if conds, err = agentCond(p, conds, "agent_id", f.AgentID); err != nil {
			return nil, err
		}
	}
	for _, ip := range []struct {
		col    string
		values List
	}{{"client_ip", f.ClientIP}, {"server_ip", f.ServerIP}, {"origin", f.Origin}} {
		if len(ip.values) == 0 {
			continue
		}
		prefixes := make([]string, len(ip.values))
		for i, v := range ip.values {
			prefix, err := parsePrefix(v)
			if err != nil {
				return nil, invalid("%s %q is not an IP address or CIDR prefix", ip.col, v)
			}
			prefixes[i] = prefix
		}
		conds = append(conds, ip.col+" <<= ANY("+p.arg(prefixes)+"::text[]::inet[])")
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
	if len(f.Server) > 0 {
		cond, err := p.serverCond(f.Server)
		if err != nil {
			return nil, err
		}
		conds = append(conds, cond)
	}
	if len(f.ServerName) > 0 {
		conds = append(conds, "host = ANY("+p.arg([]string(f.ServerName))+"::text[])")
	}
	if len(f.Method) > 0 {
		methods := make([]string, len(f.Method))
		for i, m := range f.Method {
			methods[i] = strings.ToUpper(m)
		}
		conds = append(conds, "method = ANY("+p.arg(methods)+"::text[])")
	}
	if len(f.Status) > 0 {
		statuses := make([]int16, len(f.Status))
		for i, s := range f.Status {
			if s < 100 || s > 999 {
				return nil, invalid("status %d is not an HTTP status", s)
			}
			statuses[i] = int16(s)
		}
		conds = append(conds, "status = ANY("+p.arg(statuses)+"::int2[])")
	}
	if len(f.StatusClass) > 0 {
		cond, err := p.statusClassCond(f.StatusClass)
		if err != nil {
			return nil, err
		}
		conds = append(conds, cond)
	}
	if f.MinDurationMs != nil {
		conds = append(conds, "duration_us >= "+p.arg(int64(*f.MinDurationMs*1000)))
	}
	if f.MaxDurationMs != nil {
		conds = append(conds, "duration_us <= "+p.arg(int64(*f.MaxDurationMs*1000)))
	}
	if len(f.Identification) > 0 {
		conds = append(conds, "identification = ANY("+p.arg([]string(f.Identification))+"::text[])")
	}
	if len(f.Template) > 0 {
		conds = append(conds, "template = ANY("+p.arg([]string(f.Template))+"::text[])")
	}
	if len(f.TokenProblem) > 0 {
		cond, err := tokenProblemCond(f.TokenProblem)
		if err != nil {
			return nil, err
		}
		conds = append(conds, cond)
	}
	if f.MultipleCredentials != nil {
		conds = append(conds, "multiple_credentials = "+p.arg(*f.MultipleCredentials))
	}
	// Text patterns last, prefixes before regular expressions.
	if f.PathPrefix != "" {
		conds = append(conds, "starts_with(path, "+p.arg(f.PathPrefix)+")")
	}
	if f.TemplatePrefix != "" {
		conds = append(conds, "starts_with(template, "+p.arg(f.TemplatePrefix)+")")
	}
	if f.PathRegex != "" {
		conds = append(conds, "path ~ "+p.arg(f.PathRegex))
	}
	if f.Search != "" {
		conds = append(conds, "strpos(lower(path), lower("+p.arg(f.Search)+")) > 0")
	}
	if f.TemplateRegex != "" {
		conds = append(conds, "template ~ "+p.arg(f.TemplateRegex))
	}
	return conds, nil
}

// tokenProblemCond selects the calls whose JWT had any of problems
// ("not_yet_valid", "expired") at capture time.
func tokenProblemCond(problems List) (string, error) {
	var alts []string
	for _, pr := range problems {
		var col string
		switch strings.ToLower(pr) {
		case "not_yet_valid":
			col = "token_not_yet_valid"
		case "expired":
			col = "token_expired"
		default:
			return "", invalid("token problem %q is not one of not_yet_valid, expired", pr)
		}
		if !slices.Contains(alts, col) {
			alts = append(alts, col)
		}
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return "(" + strings.Join(alts, " OR ") + ")", nil
}

// statusClassCond selects the calls whose status is in one of classes
// ("1xx" … "5xx"), or that have no response when classes holds "none".
func (p *params) statusClassCond(classes List) (string, error) {
	var hundreds []int16
	none := false
	for _, c := range classes {
		switch c = strings.ToLower(c); c {
		case "none":
			none = true
		case "1xx", "2xx", "3xx", "4xx", "5xx":
			hundreds = append(hundreds, int16(c[0]-'0'))
		default:
			return "", invalid("status class %q is not one of 1xx, 2xx, 3xx, 4xx, 5xx, none", c)
		}
	}
	// Ranges of constants (the classes are a fixed set, not values from
	// the query), so that the planner can prove a class implies the
	// predicate of http_calls_errors_server_time_idx.
	slices.Sort(hundreds)
	hundreds = slices.Compact(hundreds)
	var alts []string
	if none {
		alts = append(alts, "status IS NULL")
	}
	for i := 0; i < len(hundreds); {
		j := i + 1
		for j < len(hundreds) && hundreds[j] == hundreds[j-1]+1 {
			j++
		}
		alts = append(alts, fmt.Sprintf("(status >= %d AND status < %d)", 100*hundreds[i], 100*(hundreds[j-1]+1)))
		i = j
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return "(" + strings.Join(alts, " OR ") + ")", nil
}

// serverCond selects the calls to one of the "ip:port" servers: one
// equality per column for one server, else one pair per server, so that
// http_calls_server_time_idx (server_ip, server_port, time) serves both,
// and for one server in time order.
func (p *params) serverCond(servers List) (string, error) {
	var pairs []string
	seen := map[string]bool{}
	for _, v := range servers {
		s, ip, port, err := parseServer(v)
		if err != nil {
			return "", err
		}
		if seen[s] {
			continue
		}
		seen[s] = true
		pairs = append(pairs, "server_ip = "+p.arg(ip)+"::inet AND server_port = "+p.arg(port))
	}
	if len(pairs) == 1 {
		return pairs[0], nil
	}
	return "((" + strings.Join(pairs, ")\n    OR (") + "))", nil
}

// parseServer checks an "ip:port" server ("[ip]:port" too for IPv6) and
// returns it as the server dimension writes it (host(server_ip) || ':' ||
// server_port), with its IP and port.
func parseServer(s string) (text, ip string, port int32, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", 0, invalid("server %q is not ip:port", s)
	}
	a, aerr := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s[:i], "["), "]"))
	p, perr := strconv.ParseUint(s[i+1:], 10, 16)
	if aerr != nil || perr != nil {
		return "", "", 0, invalid("server %q is not ip:port", s)
	}
	ip = a.Unmap().String()
	return ip + ":" + strconv.FormatUint(p, 10), ip, int32(p), nil
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

// agentCond appends "col is one of the agents" to conds.
func agentCond(p *params, conds []string, col string, agentIDs List) ([]string, error) {
	ids := make([]string, len(agentIDs))
	for i, a := range agentIDs {
		id, err := parseAgentID(a)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return append(conds, col+" = ANY("+p.arg(ids)+"::text[]::uuid[])"), nil
}

// parseAgentID checks that s is a UUID and returns its canonical form.
func parseAgentID(s string) (string, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return "", invalid("agent id %q is not a UUID", s)
	}
	return id.String(), nil
}
