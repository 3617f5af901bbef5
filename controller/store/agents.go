package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/encoding/protojson"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/agentconfig"
)

// Agent is an agents row with its stored config.
type Agent struct {
	ID       string
	Name     string
	Hostname string
	Version  string
	// Mode is "interface", "file", "upload", or "" when the agent did not say.
	Mode             string
	Interfaces       []*orbweaverv1.NetworkInterface
	BootID           string // "" when unknown
	FirstSeen        time.Time
	LastSeen         time.Time
	CaptureRequested bool
	State            string
	StateReason      string
	// Config is the agent's stored config, nil when none was saved.
	Config *orbweaverv1.AgentConfig
	// ConfigVersion is the stored config's version (0 when none), and
	// AckedConfigVersion the last version the agent answered for, with
	// ApplyError its error ("" when applied).
	ConfigVersion      uint64
	AckedConfigVersion uint64
	ApplyError         string
	// Overrides are the fields set for this agent alone.
	Overrides agentconfig.Layer
	// ReportedConfig is what the agent said it runs with at its last
	// acknowledgement (nil before the first).
	ReportedConfig *orbweaverv1.AgentConfig
	// PreviousBoot is how the agent's previous process ended, nil when
	// the agent never said.
	PreviousBoot *orbweaverv1.PreviousBoot
}

// jsonOptions write protobuf messages to jsonb columns: proto field names
// (as in "capture.bpf_filter"), zero values included.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

var modeNames = map[orbweaverv1.AgentMode]string{
	orbweaverv1.AgentMode_AGENT_MODE_INTERFACE: "interface",
	orbweaverv1.AgentMode_AGENT_MODE_FILE:      "file",
	orbweaverv1.AgentMode_AGENT_MODE_UPLOAD:    "upload",
}

const agentSelect = `SELECT a.id::text, a.name, a.hostname, a.version, COALESCE(a.mode, ''), a.interfaces,
	COALESCE(a.boot_id::text, ''), a.first_seen, a.last_seen, a.capture_requested, a.state, a.state_reason,
	c.config, COALESCE(c.version, 0), COALESCE(c.acked_version, 0), COALESCE(c.apply_error, ''), c.overrides,
	a.previous_boot_id::text, a.previous_calls_captured, a.previous_calls_acked, a.previous_unacked_calls,
	a.previous_queue_drops, a.previous_as_of, a.previous_clean_exit, c.reported
	FROM agents a LEFT JOIN agent_configs c ON c.agent_id = a.id`

// UpsertAgent records an agent's Hello at now: a new agent is inserted
// (capture requested, no config); a known one gets its name, hostname,
// version, mode, interfaces, boot id and last_seen updated, keeping
// first_seen, capture_requested, state and config.
func (s *Store) UpsertAgent(ctx context.Context, h *orbweaverv1.Hello, now time.Time) (Agent, error) {
	id, err := uuid.Parse(h.GetAgentId())
	if err != nil {
		return Agent{}, fmt.Errorf("store: upsert agent: agent id %q: %w", h.GetAgentId(), err)
	}
	var bootID *uuid.UUID
	if h.GetBootId() != "" {
		b, err := uuid.Parse(h.GetBootId())
		if err != nil {
			return Agent{}, fmt.Errorf("store: upsert agent %s: boot id %q: %w", id, h.GetBootId(), err)
		}
		bootID = &b
	}
	var mode *string
	if m, ok := modeNames[h.GetMode()]; ok {
		mode = &m
	}
	ifaces, err := marshalInterfaces(h.GetInterfaces())
	if err != nil {
		return Agent{}, fmt.Errorf("store: upsert agent %s: %w", id, err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO agents (id, name, hostname, version, mode, interfaces, boot_id, first_seen, last_seen)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
		ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, hostname = EXCLUDED.hostname, version = EXCLUDED.version,
			mode = EXCLUDED.mode, interfaces = EXCLUDED.interfaces, boot_id = EXCLUDED.boot_id, last_seen = EXCLUDED.last_seen`,
		id, text(h.GetName()), text(h.GetHostname()), text(h.GetVersion()), mode, ifaces, bootID, now)
	if err == nil {
		err = s.recordPreviousBoot(ctx, id, h.GetPreviousBoot())
	}
	if err != nil {
		return Agent{}, fmt.Errorf("store: upsert agent %s: %w", id, err)
	}
	return s.GetAgent(ctx, id.String())
}

// GetAgent returns the agent with the given id, or an error wrapping
// ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id string) (Agent, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return Agent{}, fmt.Errorf("store: agent %q: %w", id, ErrNotFound)
	}
	agents, err := s.queryAgents(ctx, agentSelect+" WHERE a.id = $1", uid)
	if err != nil {
		return Agent{}, fmt.Errorf("store: agent %s: %w", id, err)
	}
	if len(agents) == 0 {
		return Agent{}, fmt.Errorf("store: agent %s: %w", id, ErrNotFound)
	}
	return agents[0], nil
}

// FindAgent returns the agent whose id is idOrName, else the one agent
// with that name. Errors wrap ErrNotFound when none matches and
// ErrAmbiguous when several agents have the name.
func (s *Store) FindAgent(ctx context.Context, idOrName string) (Agent, error) {
	a, err := s.GetAgent(ctx, idOrName)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return a, err
	}
	agents, err := s.queryAgents(ctx, agentSelect+" WHERE a.name = $1 ORDER BY a.id LIMIT 2", idOrName)
	if err != nil {
		return Agent{}, fmt.Errorf("store: find agent %q: %w", idOrName, err)
	}
	switch len(agents) {
	case 0:
		return Agent{}, fmt.Errorf("store: agent %q: %w", idOrName, ErrNotFound)
	case 1:
		return agents[0], nil
	default:
		return Agent{}, fmt.Errorf("store: agent name %q is used by several agents, use an id: %w", idOrName, ErrAmbiguous)
	}
}

// ListAgents returns all agents ordered by name, then id.
func (s *Store) ListAgents(ctx context.Context) ([]Agent, error) {
	agents, err := s.queryAgents(ctx, agentSelect+" ORDER BY a.name, a.id")
	if err != nil {
		return nil, fmt.Errorf("store: list agents: %w", err)
	}
	return agents, nil
}

func (s *Store) queryAgents(ctx context.Context, sql string, args ...any) ([]Agent, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var agents []Agent
	for rows.Next() {
		var (
			a                         Agent
			ifaces, config, overrides []byte
			version, acked            int64
			prevID                    *string
			prevCaptured, prevAcked   *int64
			prevUnacked, prevDrops    *int64
			prevAsOf                  *time.Time
			prevClean                 *bool
			reported                  []byte
		)
		if err := rows.Scan(&a.ID, &a.Name, &a.Hostname, &a.Version, &a.Mode, &ifaces, &a.BootID,
			&a.FirstSeen, &a.LastSeen, &a.CaptureRequested, &a.State, &a.StateReason,
			&config, &version, &acked, &a.ApplyError, &overrides,
			&prevID, &prevCaptured, &prevAcked, &prevUnacked, &prevDrops, &prevAsOf, &prevClean, &reported); err != nil {
			return nil, err
		}
		a.FirstSeen, a.LastSeen = a.FirstSeen.UTC(), a.LastSeen.UTC()
		a.ConfigVersion, a.AckedConfigVersion = uint64(version), uint64(acked)
		if a.Interfaces, err = unmarshalInterfaces(ifaces); err != nil {
			return nil, fmt.Errorf("agent %s: interfaces: %w", a.ID, err)
		}
		if config != nil {
			a.Config = &orbweaverv1.AgentConfig{}
			if err := protojson.Unmarshal(config, a.Config); err != nil {
				return nil, fmt.Errorf("agent %s: config: %w", a.ID, err)
			}
		}
		if reported != nil {
			a.ReportedConfig = &orbweaverv1.AgentConfig{}
			if err := protojson.Unmarshal(reported, a.ReportedConfig); err != nil {
				return nil, fmt.Errorf("agent %s: reported config: %w", a.ID, err)
			}
		}
		if prevID != nil {
			a.PreviousBoot = &orbweaverv1.PreviousBoot{BootId: *prevID, CleanExit: prevClean != nil && *prevClean,
				CallsCaptured: u64(prevCaptured), CallsAcked: u64(prevAcked), UnackedCalls: u64(prevUnacked), QueueDrops: u64(prevDrops)}
			if prevAsOf != nil {
				a.PreviousBoot.AsOfNs = prevAsOf.UnixNano()
			}
		}
		if overrides != nil {
			if a.Overrides, err = unmarshalLayer(overrides); err != nil {
				return nil, fmt.Errorf("agent %s: overrides: %w", a.ID, err)
			}
		}
		agents = append(agents, a)
	}
	return agents, rows.Err()
}

func marshalInterfaces(ifaces []*orbweaverv1.NetworkInterface) (string, error) {
	list := make([]json.RawMessage, len(ifaces))
	for i, ifc := range ifaces {
		raw, err := jsonOptions.Marshal(ifc)
		if err != nil {
			return "", fmt.Errorf("interface %d: %w", i, err)
		}
		list[i] = raw
	}
	raw, err := json.Marshal(list)
	return string(raw), err
}

func unmarshalInterfaces(raw []byte) ([]*orbweaverv1.NetworkInterface, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, err
	}
	ifaces := make([]*orbweaverv1.NetworkInterface, len(list))
	for i, r := range list {
		ifaces[i] = &orbweaverv1.NetworkInterface{}
		if err := protojson.Unmarshal(r, ifaces[i]); err != nil {
			return nil, err
		}
	}
	return ifaces, nil
}

// SetAgentState records the agent's state and its reason, and last_seen
// unless lastSeen is zero.
func (s *Store) SetAgentState(ctx context.Context, id, state, reason string, lastSeen time.Time) error {
	var seen *time.Time
	if !lastSeen.IsZero() {
		seen = &lastSeen
	}
	return s.updateAgent(ctx, id, "set state",
		"UPDATE agents SET state = $2, state_reason = $3, last_seen = COALESCE($4, last_seen) WHERE id = $1",
		text(state), text(reason), seen)
}

// SetCaptureRequested records whether the agent should capture.
func (s *Store) SetCaptureRequested(ctx context.Context, id string, on bool) error {
	return s.updateAgent(ctx, id, "set capture", "UPDATE agents SET capture_requested = $2 WHERE id = $1", on)
}

// updateAgent runs an UPDATE of one agent whose first parameter is its id.
func (s *Store) updateAgent(ctx context.Context, id, what, sql string, args ...any) error {
	uid, err := uuid.Parse(id)
	if err != nil {
		return fmt.Errorf("store: %s: agent %q: %w", what, id, ErrNotFound)
	}
	tag, err := s.pool.Exec(ctx, sql, append([]any{uid}, args...)...)
	if err != nil {
		return fmt.Errorf("store: %s: agent %s: %w", what, id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("store: %s: agent %s: %w", what, id, ErrNotFound)
	}
	return nil
}

// SaveAgentConfig stores cfg as the agent's config and returns its
// version: 1 for the agent's first config, else the previous version + 1.
// The acknowledgement columns are left as they are.
func (s *Store) SaveAgentConfig(ctx context.Context, id string, cfg *orbweaverv1.AgentConfig) (uint64, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return 0, fmt.Errorf("store: save config: agent %q: %w", id, ErrNotFound)
	}
	if cfg == nil {
		return 0, fmt.Errorf("store: save config: agent %s: nil config", id)
	}
	raw, err := jsonOptions.Marshal(cfg)
	if err != nil {
		return 0, fmt.Errorf("store: save config: agent %s: %w", id, err)
	}
	var version int64
	err = s.pool.QueryRow(ctx, `INSERT INTO agent_configs (agent_id, config, version, updated_at)
		VALUES ($1, $2, 1, now())
		ON CONFLICT (agent_id) DO UPDATE SET config = EXCLUDED.config, version = agent_configs.version + 1,
			updated_at = EXCLUDED.updated_at
		RETURNING version`, uid, string(raw)).Scan(&version)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign_key_violation: no such agent
		return 0, fmt.Errorf("store: save config: agent %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("store: save config: agent %s: %w", id, err)
	}
	return uint64(version), nil
}

// AckAgentConfig records the agent's answer for a config version:
// applyError is "" when it applied it. An answer older than the last one
// recorded is ignored. Errors wrap ErrNotFound when the agent has no
// config; answering a version never saved is an error.
func (s *Store) AckAgentConfig(ctx context.Context, id string, version uint64, applyError string, reported *orbweaverv1.AgentConfig) error {
	uid, err := uuid.Parse(id)
	if err != nil {
		return fmt.Errorf("store: ack config: agent %q: %w", id, ErrNotFound)
	}
	if version > math.MaxInt64 {
		return fmt.Errorf("store: ack config: agent %s: version %d out of range", id, version)
	}
	var rep *string
	if reported != nil {
		b, err := jsonOptions.Marshal(reported)
		if err != nil {
			return fmt.Errorf("store: ack config: agent %s: reported config: %w", id, err)
		}
		str := string(b)
		rep = &str
	}
	var current int64
	err = s.pool.QueryRow(ctx, `WITH updated AS (
			UPDATE agent_configs SET acked_version = $2, apply_error = $3, reported = COALESCE($4, reported)
			WHERE agent_id = $1 AND version >= $2 AND acked_version <= $2
			RETURNING version)
		SELECT version FROM updated
		UNION ALL SELECT version FROM agent_configs WHERE agent_id = $1 AND NOT EXISTS (SELECT 1 FROM updated)`,
		uid, int64(version), text(applyError), rep).Scan(&current)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("store: ack config: agent %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("store: ack config: agent %s: %w", id, err)
	}
	if uint64(current) < version {
		return fmt.Errorf("store: ack config: agent %s: version %d was never saved (latest %d)", id, version, current)
	}
	return nil
}

// InsertHeartbeat records a heartbeat of the agent at time at (when at is
// zero: the heartbeat's own time, else now). Counters above the bigint
// range are clamped.
func (s *Store) InsertHeartbeat(ctx context.Context, agentID string, hb *orbweaverv1.Heartbeat, at time.Time) error {
	uid, err := uuid.Parse(agentID)
	if err != nil {
		return fmt.Errorf("store: insert heartbeat: agent id %q: %w", agentID, err)
	}
	if at.IsZero() {
		at = time.Now()
		if hb.GetTimeNs() != 0 {
			at = time.Unix(0, hb.GetTimeNs())
		}
	}
	var captureStart *time.Time
	if ns := hb.GetCaptureStartNs(); ns != 0 {
		t := time.Unix(0, ns).UTC()
		captureStart = &t
	}
	var byReason *string
	if len(hb.GetQueueDropsByReason()) > 0 {
		b, err := json.Marshal(hb.GetQueueDropsByReason())
		if err != nil {
			return fmt.Errorf("store: insert heartbeat: agent %s: %w", agentID, err)
		}
		str := string(b)
		byReason = &str
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO agent_heartbeats (time, agent_id, capturing, packets, bytes, kernel_drops,
			queue_drops, parse_errors, calls_sent, queue_depth, in_flight_batches, last_ack_rtt_us, capture_error,
			cpu_percent, rss_bytes, capture_start, packets_per_second, bytes_per_second, bytes_uploaded,
			queue_drops_by_reason, unacked_calls, calls_captured)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`,
		at, uid, hb.GetCapturing(), clampInt64(hb.GetPackets()), clampInt64(hb.GetBytes()),
		clampInt64(hb.GetKernelDrops()), clampInt64(hb.GetQueueDrops()), clampInt64(hb.GetParseErrors()),
		clampInt64(hb.GetCallsSent()), clampInt64(hb.GetQueueDepth()), int32(min(hb.GetInFlightBatches(), math.MaxInt32)),
		hb.GetLastAckRttUs(), text(hb.GetCaptureError()),
		hb.GetCpuPercent(), clampInt64(hb.GetRssBytes()), captureStart, hb.GetPacketsPerSecond(), hb.GetBytesPerSecond(),
		clampInt64(hb.GetBytesUploaded()), byReason, clampInt64(hb.GetUnackedCalls()), clampInt64(hb.GetCallsCaptured()))
	if err != nil {
		return fmt.Errorf("store: insert heartbeat: agent %s: %w", agentID, err)
	}
	return nil
}

func clampInt64(v uint64) int64 { return int64(min(v, math.MaxInt64)) }

func u64(p *int64) uint64 {
	if p == nil || *p < 0 {
		return 0
	}
	return uint64(*p)
}

// recordPreviousBoot stores what the agent said about its previous
// process; a hello without it leaves the last record in place.
func (s *Store) recordPreviousBoot(ctx context.Context, id uuid.UUID, p *orbweaverv1.PreviousBoot) error {
	if p == nil {
		return nil
	}
	prev, err := uuid.Parse(p.GetBootId())
	if err != nil {
		return fmt.Errorf("previous boot id %q: %w", p.GetBootId(), err)
	}
	var asOf *time.Time
	if p.GetAsOfNs() != 0 {
		t := time.Unix(0, p.GetAsOfNs()).UTC()
		asOf = &t
	}
	_, err = s.pool.Exec(ctx, `UPDATE agents SET previous_boot_id = $2, previous_calls_captured = $3, previous_calls_acked = $4,
		previous_unacked_calls = $5, previous_queue_drops = $6, previous_as_of = $7, previous_clean_exit = $8 WHERE id = $1`,
		id, prev, clampInt64(p.GetCallsCaptured()), clampInt64(p.GetCallsAcked()), clampInt64(p.GetUnackedCalls()),
		clampInt64(p.GetQueueDrops()), asOf, p.GetCleanExit())
	return err
}
