package agents

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/auth"
)

// Store is what the stream handler needs from storage.
type Store interface {
	UpsertAgent(ctx context.Context, h *orbweaverv1.Hello, now time.Time) (store.Agent, error)
	EnsureAgentConfig(ctx context.Context, id string) (store.ConfigChange, error)
	AckAgentConfig(ctx context.Context, id string, version uint64, applyError string, reported *orbweaverv1.AgentConfig) error
	SetAgentState(ctx context.Context, id, state, reason string, lastSeen time.Time) error
	InsertHeartbeat(ctx context.Context, agentID string, hb *orbweaverv1.Heartbeat, at time.Time) error
	InsertCallBatches(ctx context.Context, batches []*orbweaverv1.CallBatch) ([]store.BatchResult, error)
}

// Observer is told about ingest events (for metrics); it may be nil.
type Observer interface {
	BatchStored(calls int, duplicate bool, took time.Duration)
	BatchFailed(err error)
	// IngestQueueInc and IngestQueueDec track batches received and not
	// yet stored.
	IngestQueueInc()
	IngestQueueDec()
}

// Service implements orbweaverv1.AgentServiceServer. Its Run method stores
// the call batches the streams receive.
type Service struct {
	orbweaverv1.UnimplementedAgentServiceServer

	store    Store
	registry *Registry
	log      *slog.Logger
	observer Observer
	// jobs holds the batches received on every stream, waiting for one
	// of ingestWriters writers; a writer stores up to about
	// ingestMaxCalls calls in one transaction.
	jobs           chan ingestJob
	ingestWriters  int
	ingestMaxCalls int
}

// NewService returns the stream handler. Run must run for streams to make
// progress.
func NewService(st Store, reg *Registry, log *slog.Logger, obs Observer) *Service {
	return &Service{store: st, registry: reg, log: log, observer: obs,
		jobs: make(chan ingestJob, ingestQueue), ingestWriters: defaultIngestWriters, ingestMaxCalls: ingestMaxCalls}
}

// Connect serves one agent stream. The first message must be a Hello.
func (s *Service) Connect(stream orbweaverv1.AgentService_ConnectServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()

	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message on the stream must be a hello")
	}
	if _, err := uuid.Parse(hello.GetAgentId()); err != nil {
		return status.Errorf(codes.InvalidArgument, "hello.agent_id %q is not a UUID", hello.GetAgentId())
	}
	if _, err := uuid.Parse(hello.GetBootId()); err != nil {
		return status.Errorf(codes.InvalidArgument, "hello.boot_id %q is not a UUID", hello.GetBootId())
	}
	if err := auth.CheckAgentID(ctx, hello.GetAgentId()); err != nil {
		return err
	}
	id := hello.GetAgentId()
	log := s.log.With("agent_id", id, "agent", hello.GetName())
	now := time.Now()

	rec, err := s.store.UpsertAgent(ctx, hello, now)
	if err != nil {
		log.Error("register agent", "err", err)
		return status.Error(codes.Unavailable, "controller storage is unavailable; retry later")
	}
	conf, err := s.store.EnsureAgentConfig(ctx, id)
	if err != nil {
		log.Error("initial config", "err", err)
		return status.Error(codes.Unavailable, "controller storage is unavailable; retry later")
	}
	cfg, version := conf.Config, conf.Version

	sess := &session{
		agentID:     id,
		bootID:      hello.GetBootId(),
		out:         make(chan *orbweaverv1.ControllerMessage, 1024),
		connectedAt: now,
		lastSeen:    now,
		capturing:   hello.GetCapturing(),
	}
	s.registry.register(sess)
	defer func() {
		s.registry.unregister(sess)
		// The stream's context is gone: record the disconnection on our own.
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		sess.mu.Lock()
		last := sess.lastSeen
		sess.mu.Unlock()
		if err := s.store.SetAgentState(dctx, id, "not_visible", "", last); err != nil {
			log.Warn("record disconnection", "err", err)
		}
		log.Info("agent disconnected")
	}()
	log.Info("agent connected", "boot_id", hello.GetBootId(), "mode", hello.GetMode().String(), "version", hello.GetVersion())
	if p := hello.GetPreviousBoot(); p != nil && !p.GetCleanExit() && p.GetUnackedCalls() > 0 {
		log.Warn("agent's previous process exited uncleanly: its unacknowledged calls are lost",
			"previous_boot_id", p.GetBootId(), "lost_calls_at_most", p.GetUnackedCalls(),
			"as_of", time.Unix(0, p.GetAsOfNs()).UTC())
	}

	welcome := &orbweaverv1.ControllerMessage{Msg: &orbweaverv1.ControllerMessage_Welcome{Welcome: &orbweaverv1.Welcome{
		Capture: rec.CaptureRequested,
		Config:  &orbweaverv1.ConfigUpdate{Version: version, Config: cfg},
	}}}
	if err := stream.Send(welcome); err != nil {
		return err
	}

	errc := make(chan error, 1)
	go func() { errc <- s.receive(ctx, stream, sess, log) }()

	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			cancel()
			if err == nil || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		case m := <-sess.out:
			if err := stream.Send(m); err != nil {
				cancel()
				return err
			}
		}
	}
}

// receive reads the stream until it ends; it is the only caller of Recv
// after the hello.
func (s *Service) receive(ctx context.Context, stream orbweaverv1.AgentService_ConnectServer, sess *session, log *slog.Logger) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		now := time.Now()
		sess.mu.Lock()
		sess.lastSeen = now
		sess.mu.Unlock()
		switch msg := m.GetMsg().(type) {
		case *orbweaverv1.AgentMessage_Heartbeat:
			hb := msg.Heartbeat
			sess.mu.Lock()
			sess.lastHB = hb
			sess.capturing = hb.GetCapturing()
			sess.captureError = hb.GetCaptureError()
			sess.mu.Unlock()
			state := sess.live()
			if err := s.store.InsertHeartbeat(ctx, sess.agentID, hb, now); err != nil {
				log.Warn("store heartbeat", "err", err)
			}
			if err := s.store.SetAgentState(ctx, sess.agentID, stateName(state.State), state.Reason, now); err != nil {
				log.Warn("store agent state", "err", err)
			}
		case *orbweaverv1.AgentMessage_ConfigAck:
			ack := msg.ConfigAck
			sess.mu.Lock()
			sess.welcomed = true
			sess.configError = ack.GetError()
			sess.ackedVersion = ack.GetVersion()
			sess.mu.Unlock()
			if ack.GetError() != "" {
				log.Warn("agent rejected its config", "version", ack.GetVersion(), "reason", ack.GetError())
			}
			if err := s.store.AckAgentConfig(ctx, sess.agentID, ack.GetVersion(), ack.GetError(), ack.GetEffective()); err != nil {
				log.Warn("store config ack", "err", err)
			}
		case *orbweaverv1.AgentMessage_CallBatch:
			if err := s.submit(ingestJob{ctx: ctx, sess: sess, batch: msg.CallBatch, log: log}); err != nil {
				return err
			}
		case *orbweaverv1.AgentMessage_Hello:
			return status.Error(codes.InvalidArgument, "hello may only be sent once per stream")
		}
	}
}

// stateName is the text stored in agents.state.
func stateName(s orbweaverv1.AgentState) string {
	switch s {
	case orbweaverv1.AgentState_AGENT_STATE_CONNECTING:
		return "connecting"
	case orbweaverv1.AgentState_AGENT_STATE_STOPPED:
		return "stopped"
	case orbweaverv1.AgentState_AGENT_STATE_CAPTURING:
		return "capturing"
	case orbweaverv1.AgentState_AGENT_STATE_WRONG_CONFIGURATION:
		return "wrong_configuration"
	default:
		return "not_visible"
	}
}
