package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/orbweaver/orbweaver/agent/capture"
	"github.com/orbweaver/orbweaver/agent/pipeline"
	"github.com/orbweaver/orbweaver/internal/callconv"
	"github.com/orbweaver/orbweaver/internal/model"
)

// OfflineConfig describes a file decoded without a controller.
type OfflineConfig struct {
	File     string
	Filter   string
	Pipeline pipeline.Config
}

// Summary is what an offline run did. Its JSON form is the one-line summary
// the agent prints on stderr.
type Summary struct {
	Packets        uint64  `json:"packets"`
	Bytes          uint64  `json:"bytes"`
	Calls          uint64  `json:"calls"`
	ParseErrors    uint64  `json:"parse_errors"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Error          string  `json:"error,omitempty"`
}

// RunOffline decodes a capture file and writes one JSON object per call
// (JSON Lines) to out. It returns the summary and the read error, if any;
// calls decoded before an error are written.
func RunOffline(ctx context.Context, cfg OfflineConfig, out io.Writer) (Summary, error) {
	start := time.Now()
	h, err := capture.OpenFile(cfg.File, cfg.Filter)
	if err != nil {
		return Summary{Error: err.Error()}, err
	}
	defer h.Close()
	w := bufio.NewWriterSize(out, 64<<10)
	var (
		buf   []byte
		calls uint64
		wErr  error
	)
	p := pipeline.New(cfg.Pipeline, func(c *model.HTTPCall) {
		calls++
		buf = callconv.AppendJSON(buf[:0], c)
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil && wErr == nil {
			wErr = fmt.Errorf("write output: %w", err)
		}
	})
	runErr := runCapture(ctx, h, p)
	p.Close()
	if err := w.Flush(); err != nil && wErr == nil {
		wErr = fmt.Errorf("write output: %w", err)
	}
	st := p.Stats()
	sum := Summary{
		Packets:        st.Packets,
		Bytes:          st.Bytes,
		Calls:          calls,
		ParseErrors:    st.DecodeErrors + st.HTTPParseErrors,
		ElapsedSeconds: time.Since(start).Seconds(),
	}
	if runErr == nil {
		runErr = wErr
	}
	if runErr != nil {
		sum.Error = runErr.Error()
	}
	return sum, runErr
}
