// Package agents owns the controller's side of the agent stream: the
// registry of connected agents with their live state, and the
// AgentService.Connect handler that registers agents, pushes config and
// commands, records heartbeats and stores call batches.
package agents

import (
	"sync"
	"time"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// Live is what the controller knows about a connected agent right now.
type Live struct {
	BootID        string
	State         orbweaverv1.AgentState
	Reason        string
	ConnectedAt   time.Time
	LastSeen      time.Time
	LastHeartbeat *orbweaverv1.Heartbeat
	AckedVersion  uint64
}

// session is one open stream.
type session struct {
	agentID string
	bootID  string
	out     chan *orbweaverv1.ControllerMessage

	mu           sync.Mutex
	connectedAt  time.Time
	lastSeen     time.Time
	welcomed     bool // the agent acknowledged the welcome's config
	capturing    bool
	configError  string
	captureError string
	lastHB       *orbweaverv1.Heartbeat
	ackedVersion uint64
}

func (s *session) live() Live {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := Live{
		BootID:        s.bootID,
		ConnectedAt:   s.connectedAt,
		LastSeen:      s.lastSeen,
		LastHeartbeat: s.lastHB,
		AckedVersion:  s.ackedVersion,
	}
	switch {
	case s.configError != "":
		l.State, l.Reason = orbweaverv1.AgentState_AGENT_STATE_WRONG_CONFIGURATION, s.configError
	case s.captureError != "":
		l.State, l.Reason = orbweaverv1.AgentState_AGENT_STATE_WRONG_CONFIGURATION, s.captureError
	case !s.welcomed:
		l.State = orbweaverv1.AgentState_AGENT_STATE_CONNECTING
	case s.capturing:
		l.State = orbweaverv1.AgentState_AGENT_STATE_CAPTURING
	default:
		l.State = orbweaverv1.AgentState_AGENT_STATE_STOPPED
	}
	return l
}

// Registry tracks connected agents. It is safe for concurrent use.
type Registry struct {
	mu       sync.Mutex
	sessions map[string]*session
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{sessions: make(map[string]*session)}
}

// register adds s, replacing (and returning) an older stream of the same
// agent, which the caller should consider dead.
func (r *Registry) register(s *session) {
	r.mu.Lock()
	r.sessions[s.agentID] = s
	r.mu.Unlock()
}

// unregister removes s unless a newer stream of the same agent replaced it.
func (r *Registry) unregister(s *session) {
	r.mu.Lock()
	if r.sessions[s.agentID] == s {
		delete(r.sessions, s.agentID)
	}
	r.mu.Unlock()
}

// Live returns the live state of a connected agent; ok is false when the
// agent has no stream (it is not visible).
func (r *Registry) Live(agentID string) (l Live, ok bool) {
	r.mu.Lock()
	s := r.sessions[agentID]
	r.mu.Unlock()
	if s == nil {
		return Live{State: orbweaverv1.AgentState_AGENT_STATE_NOT_VISIBLE}, false
	}
	return s.live(), true
}

// Connected returns how many agents have a stream open.
func (r *Registry) Connected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Send queues a message for a connected agent without blocking. It returns
// false when the agent is not connected or its outbound queue is full (the
// agent then gets the current state at its next welcome).
func (r *Registry) Send(agentID string, m *orbweaverv1.ControllerMessage) bool {
	r.mu.Lock()
	s := r.sessions[agentID]
	r.mu.Unlock()
	if s == nil {
		return false
	}
	select {
	case s.out <- m:
		return true
	default:
		return false
	}
}
