package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/agentconfig"
)

// ConfigChange is an agent's new effective config after an update.
type ConfigChange struct {
	AgentID string
	Version uint64
	Config  *orbweaverv1.AgentConfig
}

type layerJSON struct {
	Paths  []string        `json:"paths"`
	Config json.RawMessage `json:"config"`
}

func marshalLayer(l agentconfig.Layer) (string, error) {
	cfg := l.Config
	if cfg == nil {
		cfg = &orbweaverv1.AgentConfig{}
	}
	raw, err := jsonOptions.Marshal(cfg)
	if err != nil {
		return "", err
	}
	paths := l.Paths
	if paths == nil {
		paths = []string{}
	}
	b, err := json.Marshal(layerJSON{Paths: paths, Config: raw})
	return string(b), err
}

func unmarshalLayer(raw []byte) (agentconfig.Layer, error) {
	var lj layerJSON
	if err := json.Unmarshal(raw, &lj); err != nil {
		return agentconfig.Layer{}, err
	}
	if len(lj.Paths) == 0 {
		return agentconfig.Layer{}, nil // an empty layer is the zero Layer
	}
	l := agentconfig.Layer{Config: &orbweaverv1.AgentConfig{}, Paths: lj.Paths}
	if len(lj.Config) > 0 {
		if err := protojson.Unmarshal(lj.Config, l.Config); err != nil {
			return agentconfig.Layer{}, err
		}
	}
	return l, nil
}

// Defaults returns the server-wide default layer.
func (s *Store) Defaults(ctx context.Context) (agentconfig.Layer, error) {
	var raw []byte
	if err := s.pool.QueryRow(ctx, "SELECT layer FROM config_defaults WHERE id").Scan(&raw); err != nil {
		return agentconfig.Layer{}, fmt.Errorf("store: read config defaults: %w", err)
	}
	l, err := unmarshalLayer(raw)
	if err != nil {
		return agentconfig.Layer{}, fmt.Errorf("store: decode config defaults: %w", err)
	}
	return l, nil
}

// UpdateDefaults replaces the server-wide defaults with what fn returns
// and, in the same transaction, recomputes every agent's effective config;
// agents whose effective config changed get a new version and are
// returned. An error from fn aborts everything and is returned as is.
func (s *Store) UpdateDefaults(ctx context.Context, fn func(cur agentconfig.Layer) (agentconfig.Layer, error)) ([]ConfigChange, error) {
	var changes []ConfigChange
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		changes = nil
		var raw []byte
		if err := tx.QueryRow(ctx, "SELECT layer FROM config_defaults WHERE id FOR UPDATE").Scan(&raw); err != nil {
			return fmt.Errorf("store: lock config defaults: %w", err)
		}
		cur, err := unmarshalLayer(raw)
		if err != nil {
			return fmt.Errorf("store: decode config defaults: %w", err)
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		enc, err := marshalLayer(next)
		if err != nil {
			return fmt.Errorf("store: encode config defaults: %w", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE config_defaults SET layer = $1, updated_at = now() WHERE id", enc); err != nil {
			return fmt.Errorf("store: save config defaults: %w", err)
		}
		rows, err := tx.Query(ctx, "SELECT agent_id::text, config, overrides FROM agent_configs ORDER BY agent_id FOR UPDATE")
		if err != nil {
			return fmt.Errorf("store: read agent configs: %w", err)
		}
		type row struct {
			id          string
			eff, newEff *orbweaverv1.AgentConfig
		}
		var todo []row
		for rows.Next() {
			var id string
			var cfgRaw, ovRaw []byte
			if err := rows.Scan(&id, &cfgRaw, &ovRaw); err != nil {
				rows.Close()
				return fmt.Errorf("store: read agent configs: %w", err)
			}
			old := &orbweaverv1.AgentConfig{}
			if err := protojson.Unmarshal(cfgRaw, old); err != nil {
				rows.Close()
				return fmt.Errorf("store: agent %s config: %w", id, err)
			}
			ov, err := unmarshalLayer(ovRaw)
			if err != nil {
				rows.Close()
				return fmt.Errorf("store: agent %s overrides: %w", id, err)
			}
			if eff := agentconfig.Effective(next, ov); !proto.Equal(eff, old) {
				todo = append(todo, row{id: id, eff: old, newEff: eff})
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: read agent configs: %w", err)
		}
		for _, r := range todo {
			enc, err := jsonOptions.Marshal(r.newEff)
			if err != nil {
				return fmt.Errorf("store: encode config of agent %s: %w", r.id, err)
			}
			var version int64
			if err := tx.QueryRow(ctx, `UPDATE agent_configs SET config = $2, version = version + 1, updated_at = now()
				WHERE agent_id = $1 RETURNING version`, r.id, string(enc)).Scan(&version); err != nil {
				return fmt.Errorf("store: save config of agent %s: %w", r.id, err)
			}
			changes = append(changes, ConfigChange{AgentID: r.id, Version: uint64(version), Config: r.newEff})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return changes, nil
}

// UpdateAgentOverrides replaces an agent's overrides with what fn returns
// (given the current defaults and overrides), stores the resulting
// effective config under a new version (1 when the agent had none) and
// returns it. An error from fn aborts and is returned as is.
func (s *Store) UpdateAgentOverrides(ctx context.Context, id string, fn func(defaults, overrides agentconfig.Layer) (agentconfig.Layer, error)) (ConfigChange, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return ConfigChange{}, fmt.Errorf("store: update config: agent %q: %w", id, ErrNotFound)
	}
	var change ConfigChange
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var defRaw []byte
		// FOR SHARE: a concurrent defaults update waits for us (and we for it).
		if err := tx.QueryRow(ctx, "SELECT layer FROM config_defaults WHERE id FOR SHARE").Scan(&defRaw); err != nil {
			return fmt.Errorf("store: read config defaults: %w", err)
		}
		defaults, err := unmarshalLayer(defRaw)
		if err != nil {
			return fmt.Errorf("store: decode config defaults: %w", err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM agents WHERE id = $1 FOR UPDATE)", uid).Scan(&exists); err != nil {
			return fmt.Errorf("store: lock agent %s: %w", id, err)
		}
		if !exists {
			return fmt.Errorf("store: update config: agent %s: %w", id, ErrNotFound)
		}
		var ov agentconfig.Layer
		var ovRaw []byte
		err = tx.QueryRow(ctx, "SELECT overrides FROM agent_configs WHERE agent_id = $1 FOR UPDATE", uid).Scan(&ovRaw)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("store: read overrides of agent %s: %w", id, err)
		default:
			if ov, err = unmarshalLayer(ovRaw); err != nil {
				return fmt.Errorf("store: decode overrides of agent %s: %w", id, err)
			}
		}
		next, err := fn(defaults, ov)
		if err != nil {
			return err
		}
		eff := agentconfig.Effective(defaults, next)
		effRaw, err := jsonOptions.Marshal(eff)
		if err != nil {
			return fmt.Errorf("store: encode config of agent %s: %w", id, err)
		}
		nextRaw, err := marshalLayer(next)
		if err != nil {
			return fmt.Errorf("store: encode overrides of agent %s: %w", id, err)
		}
		var version int64
		if err := tx.QueryRow(ctx, `INSERT INTO agent_configs (agent_id, config, overrides, version, updated_at)
			VALUES ($1, $2, $3, 1, now())
			ON CONFLICT (agent_id) DO UPDATE SET config = EXCLUDED.config, overrides = EXCLUDED.overrides,
				version = agent_configs.version + 1, updated_at = EXCLUDED.updated_at
			RETURNING version`, uid, string(effRaw), nextRaw).Scan(&version); err != nil {
			return fmt.Errorf("store: save config of agent %s: %w", id, err)
		}
		change = ConfigChange{AgentID: uid.String(), Version: uint64(version), Config: eff}
		return nil
	})
	if err != nil {
		return ConfigChange{}, err
	}
	return change, nil
}

// EnsureAgentConfig gives an agent without a config its first one (the
// defaults, version 1) and returns the agent's current config.
func (s *Store) EnsureAgentConfig(ctx context.Context, id string) (ConfigChange, error) {
	a, err := s.GetAgent(ctx, id)
	if err != nil {
		return ConfigChange{}, err
	}
	if a.Config != nil {
		return ConfigChange{AgentID: a.ID, Version: a.ConfigVersion, Config: a.Config}, nil
	}
	return s.UpdateAgentOverrides(ctx, id, func(_, ov agentconfig.Layer) (agentconfig.Layer, error) {
		return ov, nil
	})
}
