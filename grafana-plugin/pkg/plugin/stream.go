package plugin

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"

	qb "github.com/orbweaver/orbweaver/grafana-plugin/pkg/querybuilder"
)

// Live tail of calls. The frontend subscribes to the Grafana Live channel
// ds/<uid>/tail/<key>, where key is a hash of the calls query's filters,
// and sends the query as the subscription's data. Grafana runs one
// RunStream per channel while it has subscribers; RunStream polls the
// database for calls stored after a cursor (their id) and sends them as
// frames, oldest first, each call once.

// TailPollInterval is the time between two polls of a live tail that found
// no backlog (a poll that hit querybuilder.MaxTailRows polls again at once).
const TailPollInterval = 500 * time.Millisecond

// tailPathPrefix starts every stream path this datasource serves.
const tailPathPrefix = "tail/"

// tailKey is what may follow tailPathPrefix: the frontend's filter hash.
var tailKey = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Compile-time check: the datasource serves Grafana Live streams.
var _ backend.StreamHandler = (*Datasource)(nil)

// errNotTail is returned for stream paths that are not a live tail.
var errNotTail = errors.New("not a live tail path")

// tailQuery checks a stream path and decodes the calls query of its data.
func tailQuery(path string, raw []byte) (qb.Query, error) {
	key, ok := strings.CutPrefix(path, tailPathPrefix)
	if !ok || !tailKey.MatchString(key) {
		return qb.Query{}, fmt.Errorf("%w: %q", errNotTail, path)
	}
	q, err := qb.Parse(raw)
	if err != nil {
		return qb.Query{}, fmt.Errorf("live tail %s: %w", path, err)
	}
	switch q.QueryType {
	case "", qb.TypeCalls:
	default:
		return qb.Query{}, fmt.Errorf("live tail %s: %w: only calls queries can be tailed, not %q", path, qb.ErrInvalid, q.QueryType)
	}
	// Build a statement once to validate the filters now, not in RunStream.
	if _, err := qb.Tail(q, time.Now(), 0); err != nil {
		return qb.Query{}, fmt.Errorf("live tail %s: %w", path, err)
	}
	return q, nil
}

// SubscribeStream allows subscriptions to tail/<key> channels whose data is
// a valid calls query; other paths are not found.
func (d *Datasource) SubscribeStream(_ context.Context, req *backend.SubscribeStreamRequest) (*backend.SubscribeStreamResponse, error) {
	if _, err := tailQuery(req.Path, req.Data); err != nil {
		if errors.Is(err, errNotTail) {
			return &backend.SubscribeStreamResponse{Status: backend.SubscribeStreamStatusNotFound}, nil
		}
		return nil, err
	}
	if d.settingsErr != nil {
		return nil, fmt.Errorf("live tail: datasource settings: %w", d.settingsErr)
	}
	return &backend.SubscribeStreamResponse{Status: backend.SubscribeStreamStatusOK}, nil
}

// PublishStream refuses every publication: a live tail only reads.
func (d *Datasource) PublishStream(context.Context, *backend.PublishStreamRequest) (*backend.PublishStreamResponse, error) {
	return &backend.PublishStreamResponse{Status: backend.PublishStreamStatusPermissionDenied}, nil
}

// RunStream tails the calls matching the query in req.Data until ctx ends.
// It first sends an empty frame (the schema, and the sign that the tail
// started: calls stored from then on are sent), then, every
// TailPollInterval, a frame of the calls stored since the previous poll, in
// storage (id) order. A failed poll is logged and retried at the next tick.
func (d *Datasource) RunStream(ctx context.Context, req *backend.RunStreamRequest, sender *backend.StreamSender) error {
	q, err := tailQuery(req.Path, req.Data)
	if err != nil {
		return err
	}
	if d.settingsErr != nil {
		return fmt.Errorf("live tail: datasource settings: %w", d.settingsErr)
	}
	var cursor int64
	cst := qb.TailCursor(time.Now().Add(-qb.TailLookback))
	if err := d.pool.QueryRow(ctx, cst.SQL, cst.Args...).Scan(&cursor); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("live tail %s: read cursor: %w", req.Path, err)
	}
	first := true
	ticker := time.NewTicker(TailPollInterval)
	defer ticker.Stop()
	for {
		f, next, err := d.tailPoll(ctx, q, cursor)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			backend.Logger.Warn("live tail poll failed", "path", req.Path, "error", d.explain(err))
		default:
			rows, _ := f.RowLen()
			if rows > 0 || first {
				if err := sender.SendFrame(f, data.IncludeAll); err != nil {
					return fmt.Errorf("live tail %s: send: %w", req.Path, err)
				}
				first = false
			}
			cursor = next
			if rows >= qb.MaxTailRows {
				continue // a backlog: read on without waiting
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// tailPoll reads the calls stored after cursor and returns them as a frame
// of q's format, and the new cursor (the last id read).
func (d *Datasource) tailPoll(ctx context.Context, q qb.Query, cursor int64) (*data.Frame, int64, error) {
	now := time.Now()
	tr := qb.TimeRange{From: now.Add(-qb.TailLookback), To: now}
	st, err := qb.Tail(q, tr.From, cursor)
	if err != nil {
		return nil, cursor, err
	}
	f, err := d.frameOf(ctx, st, "calls", "time")
	if err != nil {
		return nil, cursor, err
	}
	next := cursor
	if id, _ := f.FieldByName("id"); id != nil && id.Len() > 0 {
		if last, ok := id.ConcreteAt(id.Len() - 1); ok {
			next = last.(int64)
		}
	}
	if q.Format == "logs" {
		if f, err = logsFrame(f); err != nil {
			return nil, cursor, err
		}
		d.linkCalls(f, tr)
		return f, next, nil
	}
	d.decorateCalls(f, tr)
	f.Meta = &data.FrameMeta{PreferredVisualization: data.VisTypeTable}
	return f, next, nil
}
