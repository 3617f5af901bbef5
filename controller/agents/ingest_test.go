package agents

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func openStore(t *testing.T) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, pgtest.URL(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

func testCalls(n int) []*orbweaverv1.HttpCall {
	now := time.Now()
	calls := make([]*orbweaverv1.HttpCall, n)
	for i := range calls {
		ns := now.Add(time.Duration(i) * time.Millisecond).UnixNano()
		calls[i] = &orbweaverv1.HttpCall{
			ClientIp: []byte{10, 0, 0, 1}, ClientPort: 40000, ServerIp: []byte{10, 0, 0, 2}, ServerPort: 80,
			RequestStartNs: ns, ResponseEndNs: ns + 1000, Method: "GET", Path: "/", Status: 200, ParseStatus: "ok",
		}
	}
	return calls
}

// testSession is a stream's session with an agent of its own.
func testSession() *session {
	return &session{agentID: uuid.NewString(), bootID: uuid.NewString(), out: make(chan *orbweaverv1.ControllerMessage, 100)}
}

func (s *session) batch(seq uint64, calls []*orbweaverv1.HttpCall) *orbweaverv1.CallBatch {
	return &orbweaverv1.CallBatch{AgentId: s.agentID, BootId: s.bootID, Sequence: seq, HttpCalls: calls}
}

// acks returns the acknowledgements sent on the session, as text.
func (s *session) acks() []string {
	var out []string
	for {
		select {
		case m := <-s.out:
			a := m.GetBatchAck()
			out = append(out, fmt.Sprintf("%d dup=%v err=%q", a.GetSequence(), a.GetDuplicate(), a.GetError()))
		default:
			return out
		}
	}
}

func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func count(t *testing.T, st *store.Store, sql string) int {
	t.Helper()
	var n int
	if err := st.Pool().QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// A group of batches is stored in one transaction; a batch that fails the
// transaction (here a header set the server's JSON parser rejects) fails
// alone, a batch of another agent than its stream's is refused, and a
// batch whose stream has ended is neither stored nor acknowledged.
func TestStoreGroup(t *testing.T) {
	st := openStore(t)
	svc := NewService(st, NewRegistry(), slog.New(slog.DiscardHandler), nil)
	ctx := context.Background()
	a, b, gone := testSession(), testSession(), testSession()
	goneCtx, cancel := context.WithCancel(ctx)
	cancel()
	bad := testCalls(2)
	// Too long for an entry of the identification index: the server
	// fails the transaction.
	big := make([]byte, 5000)
	rand.Read(big)
	bad[1].Identification = hex.EncodeToString(big)
	job := func(ctx context.Context, s *session, b *orbweaverv1.CallBatch) ingestJob {
		return ingestJob{ctx: ctx, sess: s, batch: b, log: svc.log}
	}
	group := []ingestJob{
		job(ctx, a, a.batch(1, testCalls(3))),
		job(ctx, b, b.batch(1, testCalls(2))),
		job(ctx, a, a.batch(2, bad)),
		job(ctx, a, b.batch(7, testCalls(1))),
		job(goneCtx, gone, gone.batch(1, testCalls(5))),
		job(ctx, a, a.batch(1, testCalls(3))), // resent
	}
	svc.storeGroup(ctx, group)
	equal(t, "acks of a", a.acks(), []string{
		`1 dup=false err=""`,
		`2 dup=false err="storage failed; resend later"`,
		fmt.Sprintf(`7 dup=false err=%q`, fmt.Sprintf("batch agent_id %q does not match the stream's agent %q", b.agentID, a.agentID)),
		`1 dup=true err=""`,
	})
	equal(t, "acks of b", b.acks(), []string{`1 dup=false err=""`})
	equal(t, "acks of the ended stream", gone.acks(), nil)
	if n := count(t, st, "SELECT count(*) FROM http_calls"); n != 5 {
		t.Errorf("%d calls stored, want 5", n)
	}
	if n := count(t, st, "SELECT count(*) FROM ingested_batches"); n != 2 {
		t.Errorf("%d batches recorded, want 2", n)
	}
}

// Batches waiting when a writer becomes free are stored together, and
// every one is acknowledged.
func TestRunCoalescesWaitingBatches(t *testing.T) {
	st := openStore(t)
	svc := NewService(st, NewRegistry(), slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sessions := []*session{testSession(), testSession()}
	const perSession = 8
	for seq := uint64(1); seq <= perSession; seq++ {
		for _, s := range sessions {
			if err := svc.submit(ingestJob{ctx: ctx, sess: s, batch: s.batch(seq, testCalls(100)), log: svc.log}); err != nil {
				t.Fatal(err)
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	for _, s := range sessions {
		for range perSession {
			select {
			case m := <-s.out:
				if a := m.GetBatchAck(); a.GetError() != "" || a.GetDuplicate() {
					t.Errorf("ack %v", a)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no ack within 30 s")
			}
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if n := count(t, st, "SELECT count(*) FROM http_calls"); n != 2*perSession*100 {
		t.Errorf("%d calls stored, want %d", n, 2*perSession*100)
	}
	// 16 batches of 100 calls, at most ingestMaxCalls calls per transaction,
	// two writers: a handful of transactions, not 16.
	if n := count(t, st, "SELECT count(DISTINCT xmin::text) FROM ingested_batches"); n > 4 {
		t.Errorf("16 waiting batches stored in %d transactions, want at most 4", n)
	}
}
