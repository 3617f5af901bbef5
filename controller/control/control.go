// Package control implements the operators' ControlService (the API that
// grpcurl drives): agents and their states, start/stop capture, and agent
// configuration.
package control

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbweaver/orbweaver/controller/agents"
	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/agentconfig"
)

// Store is what the control API needs from storage.
type Store interface {
	ListAgents(ctx context.Context) ([]store.Agent, error)
	FindAgent(ctx context.Context, idOrName string) (store.Agent, error)
	SetCaptureRequested(ctx context.Context, id string, on bool) error
	Defaults(ctx context.Context) (agentconfig.Layer, error)
	UpdateDefaults(ctx context.Context, fn func(cur agentconfig.Layer) (agentconfig.Layer, error)) ([]store.ConfigChange, error)
	UpdateAgentOverrides(ctx context.Context, id string, fn func(defaults, overrides agentconfig.Layer) (agentconfig.Layer, error)) (store.ConfigChange, error)
}

// Uploader serves pcap uploads (controller/upload).
type Uploader interface {
	UploadPcap(stream orbweaverv1.ControlService_UploadPcapServer) error
	ListUploads(ctx context.Context, req *orbweaverv1.ListUploadsRequest) (*orbweaverv1.ListUploadsResponse, error)
}

// FilterCompiler checks a BPF expression (capture.ValidateFilter).
type FilterCompiler func(expr string, snaplen int) error

// Service implements orbweaverv1.ControlServiceServer.
type Service struct {
	orbweaverv1.UnimplementedControlServiceServer

	store    Store
	registry *agents.Registry
	compile  FilterCompiler
	uploads  Uploader
	log      *slog.Logger
}

// NewService returns the control API.
func NewService(st Store, reg *agents.Registry, compile FilterCompiler, uploads Uploader, log *slog.Logger) *Service {
	return &Service{store: st, registry: reg, compile: compile, uploads: uploads, log: log}
}

// UploadPcap decodes a streamed capture into calls (see controller/upload).
func (s *Service) UploadPcap(stream orbweaverv1.ControlService_UploadPcapServer) error {
	return s.uploads.UploadPcap(stream)
}

// ListUploads lists running and recent uploads with their progress.
func (s *Service) ListUploads(ctx context.Context, req *orbweaverv1.ListUploadsRequest) (*orbweaverv1.ListUploadsResponse, error) {
	return s.uploads.ListUploads(ctx, req)
}

// ListAgents lists every agent the controller has ever seen, with its state.
func (s *Service) ListAgents(ctx context.Context, _ *orbweaverv1.ListAgentsRequest) (*orbweaverv1.ListAgentsResponse, error) {
	recs, err := s.store.ListAgents(ctx)
	if err != nil {
		return nil, s.internal("list agents", err)
	}
	out := &orbweaverv1.ListAgentsResponse{Agents: make([]*orbweaverv1.Agent, 0, len(recs))}
	for _, r := range recs {
		out.Agents = append(out.Agents, s.agent(r))
	}
	return out, nil
}

// GetAgent returns one agent by id or unique name.
func (s *Service) GetAgent(ctx context.Context, req *orbweaverv1.GetAgentRequest) (*orbweaverv1.Agent, error) {
	r, err := s.find(ctx, req.GetAgent())
	if err != nil {
		return nil, err
	}
	return s.agent(r), nil
}

// StartCapture asks an agent to capture; the request is remembered and
// applies at the agent's next connection too.
func (s *Service) StartCapture(ctx context.Context, req *orbweaverv1.StartCaptureRequest) (*orbweaverv1.Agent, error) {
	return s.setCapture(ctx, req.GetAgent(), true)
}

// StopCapture asks an agent to stop capturing.
func (s *Service) StopCapture(ctx context.Context, req *orbweaverv1.StopCaptureRequest) (*orbweaverv1.Agent, error) {
	return s.setCapture(ctx, req.GetAgent(), false)
}

func (s *Service) setCapture(ctx context.Context, agent string, on bool) (*orbweaverv1.Agent, error) {
	r, err := s.find(ctx, agent)
	if err != nil {
		return nil, err
	}
	if err := s.store.SetCaptureRequested(ctx, r.ID, on); err != nil {
		return nil, s.internal("set capture", err)
	}
	r.CaptureRequested = on
	kind := orbweaverv1.Command_KIND_STOP_CAPTURE
	if on {
		kind = orbweaverv1.Command_KIND_START_CAPTURE
	}
	s.registry.Send(r.ID, &orbweaverv1.ControllerMessage{Msg: &orbweaverv1.ControllerMessage_Command{Command: &orbweaverv1.Command{Kind: kind}}})
	s.log.Info("capture requested", "agent_id", r.ID, "capture", on)
	return s.agent(r), nil
}

// GetConfig returns an agent's effective config, every field's value and
// source, and the versions.
func (s *Service) GetConfig(ctx context.Context, req *orbweaverv1.GetConfigRequest) (*orbweaverv1.GetConfigResponse, error) {
	r, err := s.find(ctx, req.GetAgent())
	if err != nil {
		return nil, err
	}
	defaults, err := s.store.Defaults(ctx)
	if err != nil {
		return nil, s.internal("read defaults", err)
	}
	cfg := r.Config
	if cfg == nil { // not connected yet: what it will get
		cfg = agentconfig.Effective(defaults, r.Overrides)
	}
	return &orbweaverv1.GetConfigResponse{
		AgentId:      r.ID,
		Config:       cfg,
		Version:      r.ConfigVersion,
		AckedVersion: r.AckedConfigVersion,
		Fields:       agentconfig.Fields(defaults, r.Overrides),
		ApplyError:   r.ApplyError,
		Reported:     r.ReportedConfig,
	}, nil
}

// UpdateConfig sets (update_mask) or removes (clear_mask) overrides of one
// agent. The resulting effective config is validated field by field before
// anything is stored; all errors come back at once as InvalidArgument with
// BadRequest field violations.
func (s *Service) UpdateConfig(ctx context.Context, req *orbweaverv1.UpdateConfigRequest) (*orbweaverv1.UpdateConfigResponse, error) {
	r, err := s.find(ctx, req.GetAgent())
	if err != nil {
		return nil, err
	}
	env := agentconfig.Env{CompileFilter: s.compile}
	for _, i := range r.Interfaces {
		env.Interfaces = append(env.Interfaces, i.GetName())
	}
	var fields []*orbweaverv1.ConfigField
	change, err := s.store.UpdateAgentOverrides(ctx, r.ID, func(defaults, ov agentconfig.Layer) (agentconfig.Layer, error) {
		next, verr := agentconfig.Update(ov, req.GetConfig(), req.GetUpdateMask().GetPaths(), req.GetClearMask().GetPaths())
		if verr != nil {
			return next, verr
		}
		if verr := agentconfig.Validate(agentconfig.Effective(defaults, next), env); verr != nil {
			return next, verr
		}
		fields = agentconfig.Fields(defaults, next)
		return next, nil
	})
	if err != nil {
		return nil, s.updateError("update config", err)
	}
	s.push(change)
	s.log.Info("agent config updated", "agent_id", r.ID, "version", change.Version,
		"set", strings.Join(req.GetUpdateMask().GetPaths(), ","), "cleared", strings.Join(req.GetClearMask().GetPaths(), ","))
	return &orbweaverv1.UpdateConfigResponse{AgentId: r.ID, Config: change.Config, Version: change.Version, Fields: fields}, nil
}

// GetDefaultConfig returns the server-wide defaults.
func (s *Service) GetDefaultConfig(ctx context.Context, _ *orbweaverv1.GetDefaultConfigRequest) (*orbweaverv1.GetDefaultConfigResponse, error) {
	defaults, err := s.store.Defaults(ctx)
	if err != nil {
		return nil, s.internal("read defaults", err)
	}
	return &orbweaverv1.GetDefaultConfigResponse{
		Config: agentconfig.Effective(defaults, agentconfig.Layer{}),
		Fields: agentconfig.Fields(defaults, agentconfig.Layer{}),
	}, nil
}

// UpdateDefaultConfig sets or removes server-wide defaults; every agent
// that does not override a changed field gets a new config version at once.
// Interface names are not checked here (agents differ); an agent lacking a
// default interface reports it and shows as wrong configuration.
func (s *Service) UpdateDefaultConfig(ctx context.Context, req *orbweaverv1.UpdateDefaultConfigRequest) (*orbweaverv1.GetDefaultConfigResponse, error) {
	env := agentconfig.Env{CompileFilter: s.compile}
	var next agentconfig.Layer
	changes, err := s.store.UpdateDefaults(ctx, func(cur agentconfig.Layer) (agentconfig.Layer, error) {
		var verr *agentconfig.ValidationError
		next, verr = agentconfig.Update(cur, req.GetConfig(), req.GetUpdateMask().GetPaths(), req.GetClearMask().GetPaths())
		if verr != nil {
			return next, verr
		}
		if verr := agentconfig.Validate(agentconfig.Effective(next, agentconfig.Layer{}), env); verr != nil {
			return next, verr
		}
		return next, nil
	})
	if err != nil {
		return nil, s.updateError("update defaults", err)
	}
	for _, c := range changes {
		s.push(c)
	}
	s.log.Info("default config updated", "agents_changed", len(changes),
		"set", strings.Join(req.GetUpdateMask().GetPaths(), ","), "cleared", strings.Join(req.GetClearMask().GetPaths(), ","))
	return &orbweaverv1.GetDefaultConfigResponse{
		Config: agentconfig.Effective(next, agentconfig.Layer{}),
		Fields: agentconfig.Fields(next, agentconfig.Layer{}),
	}, nil
}

// push sends a new config to its agent when connected (otherwise the agent
// gets it in its next welcome).
func (s *Service) push(c store.ConfigChange) {
	s.registry.Send(c.AgentID, &orbweaverv1.ControllerMessage{Msg: &orbweaverv1.ControllerMessage_Config{Config: &orbweaverv1.ConfigUpdate{Version: c.Version, Config: c.Config}}})
}

func (s *Service) updateError(what string, err error) error {
	var verr *agentconfig.ValidationError
	switch {
	case errors.As(err, &verr):
		return invalid(verr)
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "agent not found")
	}
	return s.internal(what, err)
}

func invalid(verr *agentconfig.ValidationError) error {
	br := &errdetails.BadRequest{}
	for _, f := range verr.Fields {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f.Field, Description: f.Message})
	}
	st, err := status.New(codes.InvalidArgument, verr.Error()).WithDetails(br)
	if err != nil {
		return status.Error(codes.InvalidArgument, verr.Error())
	}
	return st.Err()
}

func (s *Service) find(ctx context.Context, agent string) (store.Agent, error) {
	if agent == "" {
		return store.Agent{}, status.Error(codes.InvalidArgument, "agent: give an agent id or name")
	}
	r, err := s.store.FindAgent(ctx, agent)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return r, status.Errorf(codes.NotFound, "agent %q not found", agent)
	case errors.Is(err, store.ErrAmbiguous):
		return r, status.Errorf(codes.FailedPrecondition, "several agents are named %q; use the agent id", agent)
	case err != nil:
		return r, s.internal("find agent", err)
	}
	return r, nil
}

func (s *Service) internal(what string, err error) error {
	s.log.Error(what, "err", err)
	return status.Errorf(codes.Unavailable, "%s: storage unavailable", what)
}

func (s *Service) agent(r store.Agent) *orbweaverv1.Agent {
	live, _ := s.registry.Live(r.ID)
	a := &orbweaverv1.Agent{
		Id:                 r.ID,
		Name:               r.Name,
		Hostname:           r.Hostname,
		Version:            r.Version,
		Mode:               modeOf(r.Mode),
		State:              live.State,
		StateReason:        live.Reason,
		FirstSeen:          ts(r.FirstSeen),
		LastSeen:           ts(r.LastSeen),
		Interfaces:         r.Interfaces,
		CaptureRequested:   r.CaptureRequested,
		ConfigVersion:      r.ConfigVersion,
		AckedConfigVersion: r.AckedConfigVersion,
		BootId:             r.BootID,
		LastHeartbeat:      live.LastHeartbeat,
		PreviousBoot:       r.PreviousBoot,
	}
	if !live.LastSeen.IsZero() {
		a.LastSeen = ts(live.LastSeen)
	}
	if r.Mode == "upload" {
		// Uploads have no stream: their state is what the uploader recorded.
		a.State, a.StateReason = uploadState(r.State), r.StateReason
	}
	if live.AckedVersion > a.AckedConfigVersion {
		a.AckedConfigVersion = live.AckedVersion
	}
	if a.State == orbweaverv1.AgentState_AGENT_STATE_NOT_VISIBLE && r.ApplyError != "" {
		a.StateReason = "last config error: " + r.ApplyError
	}
	return a
}

func uploadState(s string) orbweaverv1.AgentState {
	switch s {
	case "capturing":
		return orbweaverv1.AgentState_AGENT_STATE_CAPTURING
	case "stopped":
		return orbweaverv1.AgentState_AGENT_STATE_STOPPED
	}
	return orbweaverv1.AgentState_AGENT_STATE_NOT_VISIBLE
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func modeOf(m string) orbweaverv1.AgentMode {
	switch m {
	case "interface":
		return orbweaverv1.AgentMode_AGENT_MODE_INTERFACE
	case "file":
		return orbweaverv1.AgentMode_AGENT_MODE_FILE
	case "upload":
		return orbweaverv1.AgentMode_AGENT_MODE_UPLOAD
	}
	return orbweaverv1.AgentMode_AGENT_MODE_UNSPECIFIED
}
