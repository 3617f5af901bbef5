package upload

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orbweaver/orbweaver/agent/packet"
	"github.com/orbweaver/orbweaver/agent/pipeline"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/callconv"
	"github.com/orbweaver/orbweaver/internal/model"
)

const (
	// tickEvery is how often, in capture time, the pipeline's clock
	// advances.
	tickEvery = 100 * time.Millisecond
	// insertTimeout bounds one attempt to store a batch.
	insertTimeout = 30 * time.Second
)

// result is what decoding an upload produced.
type result struct {
	packets, calls, parseErrors uint64
	// fileErr: the file could not be read to its end; the calls before
	// the problem are stored and the RPC succeeds.
	fileErr string
	// rpcErr fails the RPC; failure is then the error ListUploads shows
	// ("" for rpcErr's message).
	rpcErr  error
	failure string
}

// source records the first error of the reader it wraps: the decoder
// tells from it why its input ended (end of stream, size limit, client
// gone).
type source struct {
	r   io.Reader
	err error
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && s.err == nil {
		s.err = err
	}
	return n, err
}

// decode reads a capture from r, feeds the pipeline and stores the calls.
// It runs in its own goroutine while receive fills r.
func (u *Uploader) decode(ctx context.Context, up *upload, r io.Reader) result {
	src := &source{r: r}
	rd, err := openReader(bufio.NewReaderSize(src, 64<<10))
	if err != nil {
		switch {
		case errors.Is(src.err, errAborted):
			return cancelled()
		case errors.Is(src.err, errLimit):
			return result{rpcErr: status.Errorf(codes.ResourceExhausted,
				"upload exceeds the %d-byte limit before the end of the file header; nothing was stored", u.cfg.MaxBytes)}
		}
		return result{rpcErr: status.Error(codes.InvalidArgument, "upload: "+err.Error())}
	}

	b := &batcher{u: u, up: up}
	p := pipeline.New(u.cfg.Pipeline, func(c *model.HTTPCall) {
		b.add(callconv.ToProto(c))
	})
	stats := func(res result) result {
		st := p.Stats()
		res.packets, res.calls = st.Packets, st.Calls
		res.parseErrors = st.DecodeErrors + st.HTTPParseErrors
		return res
	}
	var (
		lastTick time.Time
		readErr  error
		agentOK  bool
	)
	for {
		data, lt, ts, err := rd.next()
		if err != nil {
			readErr = err
			break
		}
		if !agentOK {
			// The first packet: check its link type (pcapng can mix
			// them; the pcap header's was checked) and create the agent.
			if !supportedLink(lt) {
				return result{rpcErr: status.Errorf(codes.InvalidArgument,
					"upload: unsupported link type %s (%d) in the %s file; supported: Ethernet, Linux SLL/SLL2, BSD loopback, raw IP",
					lt, int(lt), rd.format)}
			}
			if err := u.createAgent(ctx, up); err != nil {
				return stats(u.storeFailed(ctx, up, err))
			}
			agentOK = true
		}
		p.Packet(lt, data, ts)
		up.packets.Add(1)
		if ts.Sub(lastTick) >= tickEvery {
			lastTick = ts
			p.Tick(ts)
		}
		if err := b.flushIfDue(ctx); err != nil {
			return stats(u.storeFailed(ctx, up, err))
		}
	}

	var res result
	switch {
	case errors.Is(src.err, errAborted):
		// Calls not stored yet are dropped: the stream failed.
		return stats(cancelled())
	case errors.Is(src.err, errLimit):
		res.rpcErr = status.Errorf(codes.ResourceExhausted,
			"upload exceeds the %d-byte limit; calls decoded from the first %d bytes were stored", u.cfg.MaxBytes, u.cfg.MaxBytes)
	case errors.Is(readErr, io.EOF):
		// The end of the file, at a record boundary.
	case errors.Is(readErr, io.ErrUnexpectedEOF):
		res.fileErr = fmt.Sprintf("truncated capture: the file ends inside a packet record after %d packets; calls decoded before the cut were stored",
			up.packets.Load())
	default:
		res.fileErr = fmt.Sprintf("corrupt capture after %d packets: %v; calls decoded before the error were stored",
			up.packets.Load(), readErr)
	}
	// Everything decodable is kept: pending requests become calls.
	p.Close()
	if !agentOK {
		if err := u.createAgent(ctx, up); err != nil {
			return stats(u.storeFailed(ctx, up, err))
		}
	}
	if err := b.flush(ctx); err != nil {
		return stats(u.storeFailed(ctx, up, err))
	}
	if res.rpcErr != nil {
		res.rpcErr = status.Errorf(status.Code(res.rpcErr), "%s (%d calls, agent %s)",
			status.Convert(res.rpcErr).Message(), up.stored.Load(), up.agentID)
	}
	return stats(res)
}

func cancelled() result {
	return result{rpcErr: status.Error(codes.Canceled, "upload: client cancelled"), failure: "client cancelled"}
}

// storeFailed is the result of a storage failure (or of cancellation
// while storing).
func (u *Uploader) storeFailed(ctx context.Context, up *upload, err error) result {
	if ctx.Err() != nil {
		return cancelled()
	}
	return result{rpcErr: status.Errorf(codes.Unavailable, "upload: %v; %d calls were stored under agent %s",
		err, up.stored.Load(), up.agentID)}
}

// reader reads the packets of a pcap or pcapng file.
type reader struct {
	format string // "pcap" or "pcapng"
	// next returns the next packet; data is valid until the next call.
	next func() (data []byte, lt layers.LinkType, ts time.Time, err error)
}

// File magics (as read little-endian from the first 4 bytes).
const (
	magicPcapMicros    = 0xa1b2c3d4
	magicPcapNanos     = 0xa1b23c4d
	magicPcapngSection = 0x0a0d0d0a
)

// openReader detects the capture format by its magic and reads the file
// header. Errors are meant for the client.
func openReader(br *bufio.Reader) (*reader, error) {
	magic, err := br.Peek(4)
	switch {
	case len(magic) == 0 && errors.Is(err, io.EOF):
		return nil, errors.New("the upload is empty: no capture data was sent")
	case len(magic) < 2 && err != nil:
		return nil, fmt.Errorf("not a pcap or pcapng file: %w", err)
	case magic[0] == 0x1f && magic[1] == 0x8b:
		return nil, errors.New("the file is gzip-compressed: upload the uncompressed pcap or pcapng file")
	case err != nil:
		return nil, fmt.Errorf("not a pcap or pcapng file: %d bytes: %w", len(magic), err)
	}
	le, be := binary.LittleEndian.Uint32(magic), binary.BigEndian.Uint32(magic)
	switch {
	case le == magicPcapMicros || le == magicPcapNanos || be == magicPcapMicros || be == magicPcapNanos:
		r, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read pcap header: %w", headerErr(err))
		}
		lt := r.LinkType()
		if !supportedLink(lt) {
			return nil, fmt.Errorf("unsupported link type %s (%d) in the pcap file; supported: Ethernet, Linux SLL/SLL2, BSD loopback, raw IP", lt, int(lt))
		}
		return &reader{format: "pcap", next: func() ([]byte, layers.LinkType, time.Time, error) {
			data, ci, err := r.ZeroCopyReadPacketData()
			return data, lt, ci.Timestamp, err
		}}, nil
	case le == magicPcapngSection:
		r, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return nil, fmt.Errorf("read pcapng section header: %w", headerErr(err))
		}
		return &reader{format: "pcapng", next: func() ([]byte, layers.LinkType, time.Time, error) {
			data, ci, err := r.ZeroCopyReadPacketData()
			if err != nil {
				return nil, 0, time.Time{}, err
			}
			lt, _ := ci.AncillaryData[0].(layers.LinkType)
			return data, lt, ci.Timestamp, nil
		}}, nil
	}
	return nil, fmt.Errorf("not a pcap or pcapng file (it starts with %x)", magic)
}

// headerErr words a header read error.
func headerErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("the file ends inside its header: %w", err)
	}
	return err
}

// supportedLink reports whether the decoders know the link type.
func supportedLink(lt layers.LinkType) bool {
	var s packet.Segment
	return packet.Decode(lt, nil, &s) != packet.UnsupportedLink
}

// batcher groups an upload's calls into numbered batches and stores them.
type batcher struct {
	u       *Uploader
	up      *upload
	seq     uint64
	pending []*orbweaverv1.HttpCall
	since   time.Time // when the oldest pending call was decoded
}

func (b *batcher) add(c *orbweaverv1.HttpCall) {
	if len(b.pending) == 0 {
		b.since = time.Now()
	}
	b.pending = append(b.pending, c)
	b.up.calls.Add(1)
}

// flushIfDue stores the pending calls when a batch is full or the oldest
// has waited flushEvery.
func (b *batcher) flushIfDue(ctx context.Context) error {
	if len(b.pending) >= b.u.cfg.BatchCalls || (len(b.pending) > 0 && time.Since(b.since) >= b.u.flushEvery) {
		return b.flush(ctx)
	}
	return nil
}

// flush stores the pending calls in batches of at most BatchCalls.
func (b *batcher) flush(ctx context.Context) error {
	for len(b.pending) > 0 {
		n := min(len(b.pending), b.u.cfg.BatchCalls)
		b.seq++
		batch := &orbweaverv1.CallBatch{
			AgentId:   b.up.agentID,
			BootId:    b.up.bootID,
			Sequence:  b.seq,
			HttpCalls: b.pending[:n:n],
		}
		if err := b.u.insert(ctx, batch); err != nil {
			return err
		}
		b.up.stored.Add(uint64(n))
		b.pending = b.pending[n:]
	}
	b.pending = nil
	return nil
}

// insert stores a batch, retrying failures with backoff. A retry of a
// batch whose first attempt was committed is a duplicate, stored once.
func (u *Uploader) insert(ctx context.Context, batch *orbweaverv1.CallBatch) error {
	for attempt := 0; ; attempt++ {
		// An insert under way completes even if the client cancels, so
		// that calls_stored counts exactly what was stored.
		ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), insertTimeout)
		_, err := u.st.InsertCallBatch(ictx, batch)
		cancel()
		if err == nil {
			return nil
		}
		if attempt == len(u.retryWaits) || ctx.Err() != nil {
			return fmt.Errorf("store batch %d (%d calls) after %d attempts: %w",
				batch.GetSequence(), len(batch.GetHttpCalls()), attempt+1, err)
		}
		u.log.Warn("upload: store batch failed, retrying", "agent_id", batch.GetAgentId(),
			"sequence", batch.GetSequence(), "attempt", attempt+1, "err", err)
		t := time.NewTimer(u.retryWaits[attempt])
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("store batch %d: %w", batch.GetSequence(), ctx.Err())
		case <-t.C:
		}
	}
}
