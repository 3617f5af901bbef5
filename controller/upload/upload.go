// Package upload implements the control API's pcap upload: a client streams
// a pcap or pcapng file (UploadPcap), the controller decodes it while it
// arrives with the agent's pipeline and stores its calls under a new agent
// identity of mode "upload". ListUploads shows running and recent uploads.
//
// # Outcomes
//
// Every call decoded before an upload stops is stored, whatever stops it:
//
//   - End of stream: the pipeline is closed (pending requests become
//     no_response calls), everything is stored, and the response is
//     returned. State "done".
//   - Truncated or corrupt file (the file ends inside a record, or a record
//     cannot be read): the rest of the stream is not read; as at the end of
//     stream, then the response is returned with its error field naming
//     the problem; not an RPC error, because the calls decoded before it
//     are a valid result. State "done" with the error set.
//   - More than MaxBytes: the bytes beyond the limit are not decoded; the
//     calls decoded from the first MaxBytes bytes are stored and the RPC
//     fails with ResourceExhausted. State "failed".
//   - Not a pcap/pcapng file (also empty, gzip-compressed, or cut inside
//     its header), or an unsupported link type (the pcap header's, or the
//     first packet's in pcapng): InvalidArgument, nothing is stored and no
//     agent is created. State "failed". In pcapng, later packets of an
//     unsupported link type are counted in parse_errors.
//   - A message after start that is start again: InvalidArgument.
//   - Client cancellation: decoding stops, the batches already stored
//     stay, calls not yet stored are dropped. State "failed", error
//     "client cancelled".
//   - Storage failure after retries: Unavailable. State "failed".
//
// The upload agent is created when the file header has been read, with
// state "capturing", and set to "stopped" at the end (its state reason
// tells the outcome).
package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbweaver/orbweaver/agent/pipeline"
	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/version"
)

// Store is the storage an Uploader needs; *store.Store implements it.
type Store interface {
	UpsertAgent(ctx context.Context, h *orbweaverv1.Hello, now time.Time) (store.Agent, error)
	SetAgentState(ctx context.Context, id, state, reason string, lastSeen time.Time) error
	InsertCallBatch(ctx context.Context, b *orbweaverv1.CallBatch) (store.BatchResult, error)
}

// Config tunes an Uploader. A zero (or negative) field takes its default.
type Config struct {
	// MaxBytes caps the bytes of one upload (default 1 GiB).
	MaxBytes int64
	// BatchCalls is the most calls stored per batch (default 1000).
	BatchCalls int
	// Logger receives one line per finished upload and storage retries
	// (default: discard).
	Logger *slog.Logger
	// Pipeline configures the decoders (zero fields take the pipeline's
	// defaults).
	Pipeline pipeline.Config
	// KeepFinished is how many finished uploads ListUploads remembers
	// (default 100). Running uploads are always listed.
	KeepFinished int
}

// Defaults of Config.
const (
	DefaultMaxBytes     = 1 << 30
	DefaultBatchCalls   = 1000
	DefaultKeepFinished = 100
)

func (c Config) withDefaults() Config {
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.BatchCalls <= 0 {
		c.BatchCalls = DefaultBatchCalls
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.KeepFinished <= 0 {
		c.KeepFinished = DefaultKeepFinished
	}
	return c
}

// Upload states, as ListUploads reports them.
const (
	stateReceiving = "receiving"
	stateDone      = "done"
	stateFailed    = "failed"
)

// Agent states set on the upload agent (as the agents service names them).
const (
	agentCapturing = "capturing"
	agentStopped   = "stopped"
)

// Uploader serves UploadPcap and ListUploads. Create it with New; its
// methods are safe for concurrent use, and uploads run concurrently.
type Uploader struct {
	st  Store
	cfg Config
	log *slog.Logger
	// retryWaits are the waits before each retry of a failed batch insert
	// (so len+1 attempts in all).
	retryWaits []time.Duration
	// flushEvery stores a partial batch when it has waited this long (wall
	// time), so that calls_stored moves on slow uploads.
	flushEvery time.Duration

	mu sync.Mutex
	// uploads holds running uploads and the last KeepFinished finished
	// ones, in start order.
	uploads []*upload
}

// New returns an Uploader storing into st.
func New(st Store, cfg Config) *Uploader {
	cfg = cfg.withDefaults()
	return &Uploader{
		st:         st,
		cfg:        cfg,
		log:        cfg.Logger,
		retryWaits: []time.Duration{100 * time.Millisecond, 400 * time.Millisecond, 1600 * time.Millisecond},
		flushEvery: time.Second,
	}
}

// upload is the progress of one upload. The counters are written by the
// upload's goroutines and read by ListUploads.
type upload struct {
	id, agentID, bootID string
	name, hostname      string
	size                uint64
	started             time.Time

	bytes, packets, calls, stored atomic.Uint64
	agentCreated                  atomic.Bool

	// Guarded by Uploader.mu.
	state string
	err   string
}

// errors that close the pipe between the receiving and the decoding
// goroutines; the decoder tells from them why its input ended.
var (
	errLimit   = errors.New("upload size limit reached")
	errAborted = errors.New("upload aborted")
	errStopped = errors.New("decoding stopped")
)

// UploadPcap receives a capture file and stores its calls (see the package
// documentation for the outcomes). The first message must be start; the
// following ones carry the file's bytes in order.
func (u *Uploader) UploadPcap(stream orbweaverv1.ControlService_UploadPcapServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "upload: no message received; the first message must be start")
	}
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return status.Error(codes.InvalidArgument, "upload: the first message must be start (UploadStart), not data")
	}
	up := u.begin(ctx, start)
	log := u.log.With("upload_id", up.id, "agent_id", up.agentID, "name", up.name, "peer", up.hostname)

	pr, pw := io.Pipe()
	done := make(chan result, 1)
	go func() {
		res := u.decode(ctx, up, pr)
		// Unblock the receiver if decoding stopped before the input ended.
		pr.CloseWithError(errStopped)
		done <- res
	}()
	recvErr := u.receive(stream, up, pw)
	res := <-done
	if recvErr != nil && !errors.Is(recvErr, errLimit) {
		// The stream failed (cancellation, protocol error): the decoder saw
		// errAborted and stopped; the stream's error is the outcome.
		res.rpcErr, res.failure = recvErr, ""
		if ctx.Err() != nil || status.Code(recvErr) == codes.Canceled {
			c := cancelled()
			res.rpcErr, res.failure = c.rpcErr, c.failure
		}
	}
	if err := u.finish(ctx, log, up, res); err != nil {
		return err
	}
	return stream.SendAndClose(&orbweaverv1.UploadPcapResponse{
		UploadId:    up.id,
		AgentId:     up.agentID,
		Bytes:       up.bytes.Load(),
		Packets:     res.packets,
		Calls:       res.calls,
		ParseErrors: res.parseErrors,
		Error:       res.fileErr,
	})
}

// begin registers a new upload.
func (u *Uploader) begin(ctx context.Context, start *orbweaverv1.UploadStart) *upload {
	name := start.GetName()
	if name == "" {
		name = "upload"
	}
	hostname := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		hostname = p.Addr.String()
	}
	up := &upload{
		id:       uuid.NewString(),
		agentID:  uuid.NewString(),
		bootID:   uuid.NewString(),
		name:     name,
		hostname: hostname,
		size:     start.GetSizeBytes(),
		started:  time.Now(),
		state:    stateReceiving,
	}
	u.mu.Lock()
	u.uploads = append(u.uploads, up)
	u.mu.Unlock()
	return up
}

// receive copies the stream's data into pw until the stream ends, the size
// limit is reached or the decoder stops. It returns nil at the end of the
// stream or when the decoder stopped, errLimit at the limit, and the
// stream's error otherwise.
func (u *Uploader) receive(stream orbweaverv1.ControlService_UploadPcapServer, up *upload, pw *io.PipeWriter) error {
	var received int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			pw.Close()
			return nil
		}
		if err != nil {
			pw.CloseWithError(errAborted)
			return err
		}
		if msg.GetStart() != nil {
			err := status.Error(codes.InvalidArgument, "upload: start sent twice; only the first message may be start")
			pw.CloseWithError(errAborted)
			return err
		}
		data := msg.GetData()
		over := int64(len(data)) > u.cfg.MaxBytes-received
		if over {
			data = data[:u.cfg.MaxBytes-received]
		}
		received += int64(len(data))
		up.bytes.Add(uint64(len(data)))
		if len(data) > 0 {
			if _, err := pw.Write(data); err != nil {
				return nil // the decoder stopped; it tells why
			}
		}
		if over {
			pw.CloseWithError(errLimit)
			return errLimit
		}
	}
}

// finish records the outcome of an upload, logs it and returns the RPC's
// error (nil when the response is to be sent).
func (u *Uploader) finish(ctx context.Context, log *slog.Logger, up *upload, res result) error {
	state, errText, reason := stateDone, res.fileErr, "upload done"
	if res.fileErr != "" {
		reason = "upload done: " + res.fileErr
	}
	if res.rpcErr != nil {
		state = stateFailed
		errText = res.failure
		if errText == "" {
			errText = status.Convert(res.rpcErr).Message()
		}
		reason = "upload failed: " + errText
	}
	u.setFinished(up, state, errText)

	if up.agentCreated.Load() {
		// The stream's context may be cancelled: record the end on our own.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := u.st.SetAgentState(sctx, up.agentID, agentStopped, reason, time.Now())
		cancel()
		if err != nil {
			log.Warn("upload: set agent state", "err", err)
		}
	}

	attrs := []any{"state", state, "bytes", up.bytes.Load(), "packets", res.packets,
		"calls", res.calls, "stored", up.stored.Load(), "parse_errors", res.parseErrors}
	switch {
	case res.rpcErr != nil:
		log.Warn("upload failed", append(attrs, "err", errText)...)
		return res.rpcErr
	case res.fileErr != "":
		log.Warn("upload read error", append(attrs, "err", res.fileErr)...)
	default:
		log.Info("upload done", attrs...)
	}
	return nil
}

// setFinished records an upload's final state and forgets the oldest
// finished uploads beyond KeepFinished.
func (u *Uploader) setFinished(up *upload, state, errText string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	up.state, up.err = state, errText
	finished := 0
	for _, x := range u.uploads {
		if x.state != stateReceiving {
			finished++
		}
	}
	kept := u.uploads[:0]
	for _, x := range u.uploads {
		if x.state != stateReceiving && finished > u.cfg.KeepFinished {
			finished--
			continue
		}
		kept = append(kept, x)
	}
	clear(u.uploads[len(kept):])
	u.uploads = kept
}

// ListUploads lists running uploads and the last finished ones, in start
// order.
func (u *Uploader) ListUploads(ctx context.Context, req *orbweaverv1.ListUploadsRequest) (*orbweaverv1.ListUploadsResponse, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	resp := &orbweaverv1.ListUploadsResponse{Uploads: make([]*orbweaverv1.Upload, 0, len(u.uploads))}
	for _, up := range u.uploads {
		resp.Uploads = append(resp.Uploads, &orbweaverv1.Upload{
			UploadId:      up.id,
			AgentId:       up.agentID,
			Name:          up.name,
			State:         up.state,
			BytesReceived: up.bytes.Load(),
			SizeBytes:     up.size,
			Packets:       up.packets.Load(),
			Calls:         up.calls.Load(),
			CallsStored:   up.stored.Load(),
			Started:       timestamppb.New(up.started),
			Error:         up.err,
		})
	}
	return resp, nil
}

// createAgent records the upload agent, capturing.
func (u *Uploader) createAgent(ctx context.Context, up *upload) error {
	now := time.Now()
	_, err := u.st.UpsertAgent(ctx, &orbweaverv1.Hello{
		AgentId:   up.agentID,
		BootId:    up.bootID,
		Name:      up.name,
		Hostname:  up.hostname,
		Version:   version.Version,
		Mode:      orbweaverv1.AgentMode_AGENT_MODE_UPLOAD,
		Capturing: true,
	}, now)
	if err != nil {
		return fmt.Errorf("create upload agent: %w", err)
	}
	up.agentCreated.Store(true)
	if err := u.st.SetAgentState(ctx, up.agentID, agentCapturing, "upload receiving", now); err != nil {
		return fmt.Errorf("set upload agent state: %w", err)
	}
	return nil
}
