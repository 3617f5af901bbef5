package plugin_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"

	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/grafana-plugin/pkg/plugin"
)

// packets is a fake Grafana Live connection: it receives what RunStream
// sends.
type packets chan *backend.StreamPacket

func (p packets) Send(pkt *backend.StreamPacket) error {
	p <- pkt
	return nil
}

// newDatasource builds the plugin's instance for e's settings, as the
// instance manager does.
func newDatasource(t *testing.T, e *env) *plugin.Datasource {
	t.Helper()
	inst, err := plugin.NewDatasource(context.Background(), e.settings)
	if err != nil {
		t.Fatal(err)
	}
	ds := inst.(*plugin.Datasource)
	t.Cleanup(ds.Dispose)
	return ds
}

// liveCall is an answered call to server:8080 that started at start.
func liveCall(server, method, path string, status uint32, start time.Time) *orbweaverv1.HttpCall {
	c := call("10.0.0.1", 45000, server, 8080, method, "orders", path, status, 0, 5*time.Millisecond)
	shift := start.Sub(t0).Nanoseconds()
	c.RequestStartNs += shift
	c.RequestEndNs += shift
	c.ResponseStartNs += shift
	c.ResponseEndNs += shift
	return c
}

// tailStream is one RunStream running in the background.
type tailStream struct {
	pk     packets
	done   chan error
	cancel context.CancelFunc
}

func startTail(t *testing.T, ds *plugin.Datasource, path string, model map[string]any) *tailStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &tailStream{pk: make(packets, 64), done: make(chan error, 1), cancel: cancel}
	req := &backend.RunStreamRequest{Path: path, Data: mustJSON(t, model)}
	go func() { s.done <- ds.RunStream(ctx, req, backend.NewStreamSender(s.pk)) }()
	t.Cleanup(cancel)
	return s
}

// next waits for the next frame (or fails when RunStream ends first).
func (s *tailStream) next(t *testing.T) *data.Frame {
	t.Helper()
	select {
	case pkt := <-s.pk:
		return decodeFrame(t, pkt)
	case err := <-s.done:
		t.Fatalf("RunStream ended before sending: %v", err)
	}
	return nil
}

func decodeFrame(t *testing.T, pkt *backend.StreamPacket) *data.Frame {
	t.Helper()
	f := &data.Frame{}
	if err := f.UnmarshalJSON(pkt.Data); err != nil {
		t.Fatalf("decode frame: %v", err)
	}
	return f
}

// rowsOf returns the values of field name in f (nil for NULL).
func rowsOf(t *testing.T, f *data.Frame, name string) []any {
	t.Helper()
	return column(t, f, name)
}

func storeBatch(t *testing.T, st *store.Store, seq uint64, calls ...*orbweaverv1.HttpCall) {
	t.Helper()
	res, err := st.InsertCallBatch(context.Background(), &orbweaverv1.CallBatch{AgentId: agentA, BootId: bootA, Sequence: seq, HttpCalls: calls})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != len(calls) {
		t.Fatalf("stored %d calls, want %d", res.Rows, len(calls))
	}
}

func TestStreamSubscribe(t *testing.T) {
	e := newEnv(t, true)
	ds := newDatasource(t, e)
	ctx := context.Background()
	sub := func(path string, model any) (*backend.SubscribeStreamResponse, error) {
		raw, err := json.Marshal(model)
		if err != nil {
			t.Fatal(err)
		}
		return ds.SubscribeStream(ctx, &backend.SubscribeStreamRequest{Path: path, Data: raw})
	}
	for _, model := range []any{
		map[string]any{},
		map[string]any{"queryType": "calls", "serverIp": []string{"10.0.0.2", "10.0.0.3"}, "method": "GET", "format": "logs"},
	} {
		resp, err := sub("tail/a1B2-c_3", model)
		if err != nil || resp.Status != backend.SubscribeStreamStatusOK {
			t.Fatalf("subscribe %v: %+v, %v; want OK", model, resp, err)
		}
	}
	for _, path := range []string{"calls", "tail/", "tail/../x", "tail/a b", "other/abc"} {
		resp, err := sub(path, map[string]any{})
		if err != nil || resp.Status != backend.SubscribeStreamStatusNotFound {
			t.Errorf("subscribe %q: %+v, %v; want not found", path, resp, err)
		}
	}
	for _, model := range []any{
		map[string]any{"queryType": "stats"},
		map[string]any{"statusClass": []string{"5xx", "9xx"}},
		map[string]any{"agentId": "x' OR 1=1 --"},
		"not an object",
	} {
		if resp, err := sub("tail/k", model); err == nil {
			t.Errorf("subscribe with %v: %+v, want an error", model, resp)
		}
	}
	pub, err := ds.PublishStream(ctx, &backend.PublishStreamRequest{Path: "tail/k", Data: json.RawMessage(`{}`)})
	if err != nil || pub.Status != backend.PublishStreamStatusPermissionDenied {
		t.Fatalf("publish: %+v, %v; want permission denied", pub, err)
	}
}

// TestStreamRunTail runs a live tail against the database while calls are
// stored through the controller's store: exactly the new matching calls
// arrive, in storage order, once; cancelling the context ends the stream.
func TestStreamRunTail(t *testing.T) {
	e := newEnv(t, true) // the fixture calls are older: none may be sent
	ds := newDatasource(t, e)
	st, err := store.Open(context.Background(), e.adminURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	s := startTail(t, ds, "tail/orders", map[string]any{"serverIp": []string{"10.0.0.2"}, "method": []string{"GET", "POST"}})
	first := s.next(t)
	if n, _ := first.RowLen(); n != 0 {
		t.Fatalf("first frame has %d rows, want 0 (schema only)", n)
	}
	if got, want := fieldNames(first)[:3], []string{"id", "time", "agent_id"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("first frame fields start with %v, want %v", got, want)
	}

	now := time.Now()
	storeBatch(t, st, 10,
		liveCall("10.0.0.2", "GET", "/live/1", 200, now),
		liveCall("10.0.0.3", "GET", "/other-server", 200, now),
		liveCall("10.0.0.2", "DELETE", "/other-method", 200, now),
		liveCall("10.0.0.2", "POST", "/live/2", 201, now.Add(-time.Second)), // stored later, started earlier
	)
	var paths []any
	var idsSeen []int64
	collect := func(want int) {
		for len(paths) < want {
			f := s.next(t)
			paths = append(paths, rowsOf(t, f, "path")...)
			idsSeen = append(idsSeen, ids(t, f)...)
		}
	}
	collect(2)
	if want := []any{"/live/1", "/live/2"}; !reflect.DeepEqual(paths, want) {
		t.Fatalf("after the first batch: paths %v, want %v", paths, want)
	}

	storeBatch(t, st, 11,
		liveCall("10.0.0.2", "PUT", "/other-method", 200, now),
		liveCall("10.0.0.2", "GET", "/live/3", 503, now),
	)
	collect(3)

	s.cancel()
	if err := <-s.done; err != nil {
		t.Fatalf("RunStream after cancel: %v, want nil", err)
	}
	// Whatever was sent before RunStream returned.
	for len(s.pk) > 0 {
		f := decodeFrame(t, <-s.pk)
		paths = append(paths, rowsOf(t, f, "path")...)
		idsSeen = append(idsSeen, ids(t, f)...)
	}
	if want := []any{"/live/1", "/live/2", "/live/3"}; !reflect.DeepEqual(paths, want) {
		t.Fatalf("paths %v, want exactly %v (each once, in storage order)", paths, want)
	}
	for i := 1; i < len(idsSeen); i++ {
		if idsSeen[i] <= idsSeen[i-1] {
			t.Fatalf("ids %v are not increasing", idsSeen)
		}
	}
}

// TestStreamRunTailLogs tails in the logs format: log-lines frames.
func TestStreamRunTailLogs(t *testing.T) {
	e := newEnv(t, true)
	ds := newDatasource(t, e)
	st, err := store.Open(context.Background(), e.adminURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := startTail(t, ds, "tail/logs", map[string]any{"format": "logs", "statusClass": []string{"5xx", "none"}})
	s.next(t) // started
	now := time.Now()
	storeBatch(t, st, 20,
		liveCall("10.0.0.2", "GET", "/ok", 200, now),
		liveCall("10.0.0.2", "GET", "/boom", 503, now),
	)
	f := s.next(t)
	if f.Meta == nil || f.Meta.Type != data.FrameTypeLogLines {
		t.Fatalf("frame meta = %+v, want log-lines", f.Meta)
	}
	body := rowsOf(t, f, "body")
	if len(body) != 1 || body[0] != "GET /boom → 503 in 5.000 ms (10.0.0.1:45000 → 10.0.0.2:8080)" {
		t.Fatalf("bodies = %v", body)
	}
	if sev := rowsOf(t, f, "severity"); sev[0] != "error" {
		t.Fatalf("severity = %v", sev)
	}
	s.cancel()
	if err := <-s.done; err != nil {
		t.Fatalf("RunStream after cancel: %v", err)
	}
}
