package querybuilder

// Agents selects the agents seen (last_seen) in tr or later, with their
// latest heartbeat in tr, by name. Columns: id, name, hostname, version,
// mode, state, state_reason, capture_requested, first_seen, last_seen, then
// the latest heartbeat's capturing, packets, bytes, kernel_drops,
// queue_drops, parse_errors, calls_sent, queue_depth, capture_error (NULL
// when the agent sent none in tr).
func Agents(q Query, tr TimeRange) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	var p params
	from, to := p.arg(tr.From), p.arg(tr.To)
	conds := []string{"a.last_seen >= " + from, "a.first_seen < " + to}
	if len(q.AgentID) > 0 {
		var err error
		if conds, err = agentCond(&p, conds, "a.id", q.AgentID); err != nil {
			return Statement{}, err
		}
	}
	limit, capped := clamp(q.Limit, DefaultAgentsLimit, MaxAgentsLimit)
	sql := `SELECT a.id::text AS id,
  a.name,
  a.hostname,
  a.version,
  a.mode,
  a.state,
  a.state_reason,
  a.capture_requested,
  a.first_seen,
  a.last_seen,
  h.capturing,
  h.packets,
  h.bytes,
  h.kernel_drops,
  h.queue_drops,
  h.parse_errors,
  h.calls_sent,
  h.queue_depth,
  h.capture_error
FROM agents a
LEFT JOIN LATERAL (
  SELECT capturing, packets, bytes, kernel_drops, queue_drops, parse_errors, calls_sent, queue_depth, capture_error
  FROM agent_heartbeats
  WHERE agent_id = a.id AND time >= ` + from + ` AND time < ` + to + `
  ORDER BY time DESC
  LIMIT 1
) h ON true
WHERE ` + and(conds, "  ") + `
ORDER BY a.name, a.id
LIMIT ` + p.arg(int64(limit))
	return Statement{SQL: sql, Args: p.args, Limit: limit, Capped: capped}, nil
}

// Heartbeats selects the heartbeats in tr, by time then agent: time, agent
// (its name, else its id), and the numeric counters as float8.
func Heartbeats(q Query, tr TimeRange) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	var p params
	conds := []string{"h.time >= " + p.arg(tr.From), "h.time < " + p.arg(tr.To)}
	if len(q.AgentID) > 0 {
		var err error
		if conds, err = agentCond(&p, conds, "h.agent_id", q.AgentID); err != nil {
			return Statement{}, err
		}
	}
	limit, capped := clamp(q.Limit, DefaultStatsLimit, MaxStatsLimit)
	sql := `SELECT h.time,
  coalesce(nullif(a.name, ''), h.agent_id::text) AS agent,
  h.packets::float8 AS packets,
  h.bytes::float8 AS bytes,
  h.kernel_drops::float8 AS kernel_drops,
  h.queue_drops::float8 AS queue_drops,
  h.parse_errors::float8 AS parse_errors,
  h.calls_sent::float8 AS calls_sent,
  h.queue_depth::float8 AS queue_depth,
  h.in_flight_batches::float8 AS in_flight_batches,
  (h.last_ack_rtt_us / 1000.0)::float8 AS last_ack_rtt_ms
FROM agent_heartbeats h
LEFT JOIN agents a ON a.id = h.agent_id
WHERE ` + and(conds, "  ") + `
ORDER BY h.time, agent
LIMIT ` + p.arg(int64(limit))
	return Statement{SQL: sql, Args: p.args, Limit: limit, Capped: capped}, nil
}
