package agents

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// Ingest defaults, measured on the 2-core reference machine (Postgres on
// the same host): two writers kept it as busy as four or eight, with less
// Postgres CPU per call; Postgres CPU per stored call fell as calls per
// transaction grew (with header sets and per-minute rollups: 18.7 µs at
// 1,000, 14.4 at 4,000, 13.3 at 8,000, 12.8 at 16,000), so a writer takes
// up to 8,000 calls of waiting batches into one transaction.
const (
	defaultIngestWriters = 2
	ingestMaxCalls       = 8000
	// ingestQueue bounds the batches received and not yet taken by a
	// writer, over all streams; when it is full, streams stop reading
	// and gRPC flow control holds the agents back.
	ingestQueue = 64
)

// ingestJob is a batch received on a stream, waiting to be stored.
type ingestJob struct {
	ctx   context.Context // the stream's: done once the stream has ended
	sess  *session
	batch *orbweaverv1.CallBatch
	log   *slog.Logger
}

// Run stores the call batches received on every stream until ctx is done,
// then returns nil. Each of a few writers takes the batches waiting (up to
// about ingestMaxCalls calls) and stores them in one transaction; every
// batch is acknowledged after that commit. Streams block while Run is not
// running, so call it for as long as the service serves.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range s.ingestWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.write(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// submit queues a batch for the writers; it fails only when the stream
// has ended.
func (s *Service) submit(j ingestJob) error {
	if s.observer != nil {
		s.observer.IngestQueueInc()
	}
	select {
	case s.jobs <- j:
		return nil
	case <-j.ctx.Done():
		if s.observer != nil {
			s.observer.IngestQueueDec()
		}
		return j.ctx.Err()
	}
}

// write is one writer: it waits for a batch, takes the others already
// waiting while they fit, and stores them together.
func (s *Service) write(ctx context.Context) {
	var group []ingestJob
	for {
		group = group[:0]
		select {
		case <-ctx.Done():
			return
		case j := <-s.jobs:
			group = append(group, j)
		}
		calls := len(group[0].batch.GetHttpCalls())
	drain:
		for calls < s.ingestMaxCalls {
			select {
			case j := <-s.jobs:
				group = append(group, j)
				calls += len(j.batch.GetHttpCalls())
			default:
				break drain
			}
		}
		if s.observer != nil {
			for range group {
				s.observer.IngestQueueDec()
			}
		}
		s.storeGroup(ctx, group)
		clear(group) // let stored batches be collected
	}
}

// storeGroup stores a group of batches and acknowledges each.
func (s *Service) storeGroup(ctx context.Context, group []ingestJob) {
	acks := make([]*orbweaverv1.BatchAck, len(group))
	var (
		batches []*orbweaverv1.CallBatch
		index   []int // group index of batches[i]
	)
	for i, j := range group {
		b := j.batch
		acks[i] = &orbweaverv1.BatchAck{BootId: b.GetBootId(), Sequence: b.GetSequence()}
		switch {
		case j.ctx.Err() != nil:
			// The stream has ended: no one to acknowledge; the agent
			// resends the batch on its next stream.
			acks[i] = nil
		case b.GetAgentId() != j.sess.agentID:
			acks[i].Error = fmt.Sprintf("batch agent_id %q does not match the stream's agent %q", b.GetAgentId(), j.sess.agentID)
		default:
			batches = append(batches, b)
			index = append(index, i)
		}
	}
	if len(batches) > 0 {
		start := time.Now()
		results, err := s.store.InsertCallBatches(ctx, batches)
		if err != nil && len(batches) > 1 && ctx.Err() == nil {
			// One batch may have failed the transaction for all: store
			// them one by one so that only a bad batch is refused.
			group[index[0]].log.Warn("store call batches together failed; storing them one by one", "batches", len(batches), "err", err)
			results, err = s.storeOneByOne(ctx, batches), nil
		}
		took := time.Since(start)
		if err != nil {
			results = []store.BatchResult{{Err: err}}
		}
		for k, r := range results {
			i := index[k]
			if r.Err != nil {
				if ctx.Err() != nil {
					return // shutting down: the agents resend
				}
				group[i].log.Error("store call batch", "sequence", batches[k].GetSequence(), "calls", len(batches[k].GetHttpCalls()), "err", r.Err)
				acks[i].Error = "storage failed; resend later"
				if s.observer != nil {
					s.observer.BatchFailed(r.Err)
				}
				continue
			}
			acks[i].Duplicate = r.Duplicate
			if s.observer != nil {
				s.observer.BatchStored(r.Rows, r.Duplicate, took)
			}
		}
	}
	for i, j := range group {
		if acks[i] == nil {
			continue
		}
		select {
		case j.sess.out <- &orbweaverv1.ControllerMessage{Msg: &orbweaverv1.ControllerMessage_BatchAck{BatchAck: acks[i]}}:
		case <-j.ctx.Done():
		}
	}
}

// storeOneByOne stores each batch in its own transaction.
func (s *Service) storeOneByOne(ctx context.Context, batches []*orbweaverv1.CallBatch) []store.BatchResult {
	results := make([]store.BatchResult, len(batches))
	for i, b := range batches {
		res, err := s.store.InsertCallBatches(ctx, []*orbweaverv1.CallBatch{b})
		if err != nil {
			results[i].Err = err
			continue
		}
		results[i] = res[0]
	}
	return results
}
