package uplink

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeController is a real gRPC AgentService on a loopback socket whose
// per-stream behaviour a test chooses.
type fakeController struct {
	orbweaverv1.UnimplementedAgentServiceServer

	mu      sync.Mutex
	streams int
	batches []*orbweaverv1.CallBatch // every batch received, resends included
	// ackFor decides, per stream number (1-based) and batch, whether to ack
	// it (and with which error); returning nil sends no ack; closeAfter > 0
	// ends that stream after so many batches.
	ackFor     func(stream int, b *orbweaverv1.CallBatch) *orbweaverv1.BatchAck
	closeAfter func(stream int) int
}

func (f *fakeController) Connect(s orbweaverv1.AgentService_ConnectServer) error {
	m, err := s.Recv()
	if err != nil || m.GetHello() == nil {
		return err
	}
	f.mu.Lock()
	f.streams++
	n := f.streams
	f.mu.Unlock()
	if err := s.Send(&orbweaverv1.ControllerMessage{Msg: &orbweaverv1.ControllerMessage_Welcome{Welcome: &orbweaverv1.Welcome{Capture: true}}}); err != nil {
		return err
	}
	got := 0
	for {
		m, err := s.Recv()
		if err != nil {
			return nil
		}
		b := m.GetCallBatch()
		if b == nil {
			continue
		}
		f.mu.Lock()
		f.batches = append(f.batches, b)
		f.mu.Unlock()
		got++
		if ack := f.ackFor(n, b); ack != nil {
			if err := s.Send(&orbweaverv1.ControllerMessage{Msg: &orbweaverv1.ControllerMessage_BatchAck{BatchAck: ack}}); err != nil {
				return err
			}
		}
		if f.closeAfter != nil && f.closeAfter(n) > 0 && got >= f.closeAfter(n) {
			return nil
		}
	}
}

func ackAll(_ int, b *orbweaverv1.CallBatch) *orbweaverv1.BatchAck {
	return &orbweaverv1.BatchAck{BootId: b.GetBootId(), Sequence: b.GetSequence()}
}

type nopHandler struct{}

func (nopHandler) Welcome(*orbweaverv1.Welcome) *orbweaverv1.ConfigAck     { return nil }
func (nopHandler) Config(*orbweaverv1.ConfigUpdate) *orbweaverv1.ConfigAck { return nil }
func (nopHandler) Command(*orbweaverv1.Command)                            {}

// start serves f on a loopback port and returns an uplink connected to it.
func start(t *testing.T, f *fakeController, lim Limits) (*Uplink, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	orbweaverv1.RegisterAgentServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	u := New(Config{
		Conn:       conn,
		Hello:      func() *orbweaverv1.Hello { return &orbweaverv1.Hello{AgentId: "a"} },
		Handler:    nopHandler{},
		AgentID:    "a",
		BootID:     "boot-1",
		Limits:     lim,
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = u.Run(ctx); close(done) }()
	return u, func() {
		cancel()
		<-done
		conn.Close()
		srv.Stop()
	}
}

func calls(n int) []*orbweaverv1.HttpCall {
	out := make([]*orbweaverv1.HttpCall, n)
	for i := range out {
		out[i] = &orbweaverv1.HttpCall{Method: "GET", Path: "/", ClientPort: uint32(i)}
	}
	return out
}

func drain(t *testing.T, u *Uplink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := u.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBatchesByCountThenByDelay(t *testing.T) {
	f := &fakeController{ackFor: ackAll}
	u, stop := start(t, f, Limits{BatchMaxCalls: 10, BatchMaxDelay: 50 * time.Millisecond, MaxInFlight: 4})
	defer stop()
	for _, c := range calls(25) {
		if !u.Enqueue(c) {
			t.Fatal("enqueue refused")
		}
	}
	// The last 5 calls leave when their batch delay expires, without Drain.
	deadline := time.Now().Add(5 * time.Second)
	for u.Stats().CallsSent < 25 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var sizes []int
	for i, b := range f.batches {
		sizes = append(sizes, len(b.GetHttpCalls()))
		if b.GetSequence() != uint64(i+1) || b.GetAgentId() != "a" || b.GetBootId() != "boot-1" {
			t.Errorf("batch %d: sequence %d agent %q boot %q", i, b.GetSequence(), b.GetAgentId(), b.GetBootId())
		}
	}
	if len(sizes) != 3 || sizes[0] != 10 || sizes[1] != 10 || sizes[2] != 5 {
		t.Fatalf("batch sizes = %v, want [10 10 5]", sizes)
	}
	if st := u.Stats(); st.CallsSent != 25 || st.BatchesAcked != 3 || st.QueueDepth != 0 || st.InFlight != 0 || st.UnackedCalls != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestResendsUnackedAfterReconnect(t *testing.T) {
	// Stream 1 takes two batches, acks none, and dies; stream 2 acks all.
	f := &fakeController{
		ackFor: func(stream int, b *orbweaverv1.CallBatch) *orbweaverv1.BatchAck {
			if stream == 1 {
				return nil
			}
			return ackAll(stream, b)
		},
		closeAfter: func(stream int) int {
			if stream == 1 {
				return 2
			}
			return 0
		},
	}
	u, stop := start(t, f, Limits{BatchMaxCalls: 5, BatchMaxDelay: time.Hour, MaxInFlight: 2})
	defer stop()
	for _, c := range calls(15) {
		u.Enqueue(c)
	}
	drain(t, u)
	st := u.Stats()
	if st.CallsSent != 15 || st.BatchesAcked != 3 || st.BatchesResent != 2 || st.Reconnects < 1 {
		t.Fatalf("stats = %+v; want 15 calls in 3 acked batches, 2 resent", st)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var seqs []uint64
	for _, b := range f.batches {
		seqs = append(seqs, b.GetSequence())
	}
	want := []uint64{1, 2, 1, 2, 3}
	if len(seqs) != len(want) {
		t.Fatalf("sequences seen = %v, want %v", seqs, want)
	}
	for i := range want {
		if seqs[i] != want[i] {
			t.Fatalf("sequences seen = %v, want %v", seqs, want)
		}
	}
}

func TestAckErrorResendsSameBatch(t *testing.T) {
	var once sync.Once
	f := &fakeController{ackFor: func(stream int, b *orbweaverv1.CallBatch) *orbweaverv1.BatchAck {
		a := ackAll(stream, b)
		once.Do(func() { a.Error = "storage failed; resend later" })
		return a
	}}
	u, stop := start(t, f, Limits{BatchMaxCalls: 3, BatchMaxDelay: time.Hour})
	defer stop()
	for _, c := range calls(3) {
		u.Enqueue(c)
	}
	drain(t, u)
	f.mu.Lock()
	n := len(f.batches)
	f.mu.Unlock()
	if st := u.Stats(); st.CallsSent != 3 || n != 2 {
		t.Fatalf("calls sent %d, batches received %d; want 3 and 2 (one resend)", st.CallsSent, n)
	}
}

func TestQueueOverflowIsCounted(t *testing.T) {
	// No controller at all: nothing leaves the queue.
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	u := New(Config{Conn: conn, Hello: func() *orbweaverv1.Hello { return &orbweaverv1.Hello{} }, Handler: nopHandler{}, Limits: Limits{QueueMaxCalls: 5}})
	accepted := 0
	for _, c := range calls(8) {
		if u.Enqueue(c) {
			accepted++
		}
	}
	st := u.Stats()
	if accepted != 5 || st.QueueDrops != 3 || st.QueueDepth != 5 || st.UnackedCalls != 5 || st.QueueDropsByReason[DropQueueFullCalls] != 3 {
		t.Fatalf("accepted %d, stats %+v; want 5 accepted, 3 drops (queue_full_calls), depth 5", accepted, st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := u.EnqueueWait(ctx, calls(1)[0]); err != context.DeadlineExceeded {
		t.Fatalf("EnqueueWait on a full queue = %v, want deadline exceeded", err)
	}
}

func TestQueueByteBoundIsCounted(t *testing.T) {
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	big := &orbweaverv1.HttpCall{Path: string(make([]byte, 1000))} // 1003 bytes encoded
	u := New(Config{Conn: conn, Hello: func() *orbweaverv1.Hello { return &orbweaverv1.Hello{} }, Handler: nopHandler{},
		Limits: Limits{QueueMaxCalls: 100, QueueMaxBytes: 2500}})
	accepted := 0
	for range 5 {
		if u.Enqueue(big) {
			accepted++
		}
	}
	st := u.Stats()
	if accepted != 2 || st.QueueBytes != 2006 || st.QueueDropsByReason[DropQueueFullBytes] != 3 || st.QueueDrops != 3 {
		t.Fatalf("accepted %d, stats %+v; want 2 accepted (2006 bytes), 3 drops for queue_full_bytes", accepted, st)
	}
	// A call larger than the whole bound still goes into an empty queue.
	u2 := New(Config{Conn: conn, Hello: func() *orbweaverv1.Hello { return &orbweaverv1.Hello{} }, Handler: nopHandler{},
		Limits: Limits{QueueMaxBytes: 10}})
	if !u2.Enqueue(big) {
		t.Fatal("an oversized call was refused by an empty queue")
	}
}
