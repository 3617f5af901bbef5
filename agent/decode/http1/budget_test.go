package http1

import (
	"strings"
	"testing"
	"time"

	"github.com/orbweaver/orbweaver/agent/decode/httpfields"
	"github.com/orbweaver/orbweaver/internal/model"

	"github.com/orbweaver/orbweaver/agent/membudget"
)

// TestConnMemory: pipelined requests are charged their fixed cost and their
// header block until emitted; a request the budget cannot hold is refused
// like a header block over the cap, and counted; everything is returned at
// Close.
func TestConnMemory(t *testing.T) {
	h := newHarness(true)
	r1 := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	r2 := "GET /bb HTTP/1.1\r\nHost: x\r\n\r\n"
	r3 := "GET /ccc HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("c", 100) + "\r\n\r\n"
	one := exchangeCost + int64(len(r1))
	two := one + exchangeCost + int64(len(r2))
	respBlock := int64(len(okResp) - len("hello"))
	lim := membudget.NewLimit(two + exchangeCost + respBlock) // room for the response, not for r3
	h.opts.Budget = lim
	ts := t0
	h.conn.Data(0, []byte(r1), ts)
	if h.conn.Memory() != one || lim.Used() != one {
		t.Fatalf("after one request: memory %d, budget %d, want %d", h.conn.Memory(), lim.Used(), one)
	}
	h.conn.Data(0, []byte(r2+r3), ts)
	if h.conn.Memory() != two || lim.Used() != two {
		t.Fatalf("after three requests: memory %d, budget %d, want %d", h.conn.Memory(), lim.Used(), two)
	}
	if h.ctr.MemoryRefused.Load() != 1 || h.ctr.ParseErrors.Load() != 1 {
		t.Errorf("refused %d, parse errors %d", h.ctr.MemoryRefused.Load(), h.ctr.ParseErrors.Load())
	}
	// The response to /a keeps its header block on the call until emitted.
	h.conn.Data(1, []byte(okResp), ts)
	if want := exchangeCost + int64(len(r2)); h.conn.Memory() != want || lim.Used() != want {
		t.Errorf("after a response: memory %d, budget %d, want %d", h.conn.Memory(), lim.Used(), want)
	}
	h.conn.Close(ts.Add(time.Second))
	if h.conn.Memory() != 0 || lim.Used() != 0 {
		t.Errorf("after Close: memory %d, budget %d", h.conn.Memory(), lim.Used())
	}
	if got := statuses(h.calls); got != "GET /a ok;GET /bb no_response;" {
		t.Errorf("calls %s", got)
	}
}

// TestConnMemoryBuffers: a header block split over segments is charged by
// its buffer's capacity, and the buffer is released when the header
// block is refused.
func TestConnMemoryBuffers(t *testing.T) {
	h := newHarness(true)
	lim := membudget.NewLimit(1 << 20)
	h.opts.Budget = lim
	part := "GET /a HTTP/1.1\r\nX-Pad: " + strings.Repeat("a", 900)
	h.conn.Data(0, []byte(part), t0)
	if got := h.conn.Memory(); got != int64(cap(h.conn.sides[0].buf)) || got < int64(len(part)) || lim.Used() != got {
		t.Fatalf("memory %d, budget %d, buffer len %d cap %d", got, lim.Used(), len(h.conn.sides[0].buf), cap(h.conn.sides[0].buf))
	}
	if h.conn.Buffered() != len(part) {
		t.Errorf("buffered %d, want %d", h.conn.Buffered(), len(part))
	}
	h.conn.Close(t0)
	if h.conn.Memory() != 0 || lim.Used() != 0 {
		t.Errorf("after Close: memory %d, budget %d", h.conn.Memory(), lim.Used())
	}
}

// TestConnMemoryBodyText: a captured request body is charged until its
// call is emitted.
func TestConnMemoryBodyText(t *testing.T) {
	h := newFieldsHarness(t, httpfields.Config{CaptureBodies: true, BodyMaxBytes: 100})
	lim := membudget.NewLimit(1 << 20)
	h.opts.Budget = lim
	h.conn.Data(0, []byte(postReq), t0)
	if h.conn.Memory() <= exchangeCost || lim.Used() != h.conn.Memory() {
		t.Fatalf("memory %d, budget %d", h.conn.Memory(), lim.Used())
	}
	h.conn.Data(1, []byte(okResp), t0)
	h.conn.Close(t0)
	if h.conn.Memory() != 0 || lim.Used() != 0 {
		t.Errorf("after Close: memory %d, budget %d", h.conn.Memory(), lim.Used())
	}
}

// statuses summarises calls as "METHOD path status;".
func statuses(calls []*model.HTTPCall) string {
	var b strings.Builder
	for _, c := range calls {
		b.WriteString(c.Method + " " + c.Path + " " + string(c.ParseStatus) + ";")
	}
	return b.String()
}
