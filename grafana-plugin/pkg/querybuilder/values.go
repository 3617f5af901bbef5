package querybuilder

// Value kinds for editor drop-downs and template variables.
const (
	ValuesAgents  = "agents"
	ValuesServers = "servers"
	ValuesMethods = "methods"
	ValuesStatus  = "statuses"
	// ValuesTemplates lists route templates, ValuesIdentifications the
	// identifications (Basic-auth logins, JWT subjects).
	ValuesTemplates       = "templates"
	ValuesIdentifications = "identifications"
)

// MaxValues bounds every list of values.
const MaxValues = 500

// Values selects the distinct values of one kind seen in tr, the most
// frequent first, at most MaxValues: columns value (what a filter takes)
// and text (what a person reads).
func Values(kind string, tr TimeRange) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	var p params
	if lo, hi, ok := wholeMinutes(tr); ok && kind == ValuesServers {
		// From the rollups (see rollup.go), counts exact.
		calls, err := p.rollupCalls(callsRollup(lo, hi), Filters{}, tr, lo, hi, []string{"server_ip", "server_port"})
		if err != nil {
			return Statement{}, err
		}
		sql := `WITH rolled AS (
` + calls + `
)
SELECT host(server_ip) || ':' || server_port AS value, host(server_ip) || ':' || server_port AS text
FROM rolled
WHERE server_ip IS NOT NULL
GROUP BY server_ip, server_port
ORDER BY sum(calls) DESC, value
LIMIT ` + p.arg(int64(MaxValues))
		return Statement{SQL: sql, Args: p.args, Limit: MaxValues}, nil
	}
	from, to := p.arg(tr.From), p.arg(tr.To)
	var sql string
	switch kind {
	case ValuesAgents:
		sql = `SELECT id::text AS value, coalesce(nullif(name, ''), id::text) AS text
FROM agents
WHERE last_seen >= ` + from + ` AND first_seen < ` + to + `
ORDER BY text, value`
	case ValuesServers:
		sql = `SELECT host(server_ip) || ':' || server_port AS value, host(server_ip) || ':' || server_port AS text
FROM http_calls
WHERE time >= ` + from + ` AND time < ` + to + ` AND server_ip IS NOT NULL
GROUP BY server_ip, server_port
ORDER BY count(*) DESC, value`
	case ValuesMethods:
		sql = `SELECT method AS value, method AS text
FROM http_calls
WHERE time >= ` + from + ` AND time < ` + to + ` AND method IS NOT NULL AND method <> ''
GROUP BY method
ORDER BY count(*) DESC, value`
	case ValuesStatus:
		sql = `SELECT status::text AS value, status::text AS text
FROM http_calls
WHERE time >= ` + from + ` AND time < ` + to + ` AND status IS NOT NULL
GROUP BY status
ORDER BY status`
	case ValuesTemplates:
		sql = `SELECT template AS value, template AS text
FROM http_calls
WHERE time >= ` + from + ` AND time < ` + to + ` AND template IS NOT NULL AND template <> ''
GROUP BY template
ORDER BY count(*) DESC, value`
	case ValuesIdentifications:
		sql = `SELECT identification AS value, identification AS text
FROM http_calls
WHERE time >= ` + from + ` AND time < ` + to + ` AND identification IS NOT NULL AND identification <> ''
GROUP BY identification
ORDER BY count(*) DESC, value`
	default:
		return Statement{}, invalid("values of %q: want one of agents, servers, methods, statuses, templates, identifications", kind)
	}
	sql += "\nLIMIT " + p.arg(int64(MaxValues))
	return Statement{SQL: sql, Args: p.args, Limit: MaxValues}, nil
}
