package upload

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/orbweaver/orbweaver/agent/pipeline"
	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/model"
	"github.com/orbweaver/orbweaver/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// controlServer is the minimal ControlService serving uploads.
type controlServer struct {
	orbweaverv1.UnimplementedControlServiceServer
	u *Uploader
}

func (s *controlServer) UploadPcap(stream orbweaverv1.ControlService_UploadPcapServer) error {
	return s.u.UploadPcap(stream)
}

func (s *controlServer) ListUploads(ctx context.Context, req *orbweaverv1.ListUploadsRequest) (*orbweaverv1.ListUploadsResponse, error) {
	return s.u.ListUploads(ctx, req)
}

type env struct {
	client orbweaverv1.ControlServiceClient
	db     *pgxpool.Pool
	up     *Uploader
}

// startEnv runs an Uploader behind a gRPC server on a loopback port,
// storing into a fresh database; wrap, if not nil, wraps the store.
func startEnv(t *testing.T, cfg Config, wrap func(Store) Store) *env {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs last
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.URL(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	var s Store = st
	if wrap != nil {
		s = wrap(st)
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	up := New(s, cfg)
	up.retryWaits = []time.Duration{time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	orbweaverv1.RegisterControlServiceServer(srv, &controlServer{u: up})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() { srv.Stop(); <-served })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{client: orbweaverv1.NewControlServiceClient(conn), db: st.Pool(), up: up}
}

func repoFile(t *testing.T, rel string) []byte {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// send opens an upload, sends start and data in chunks, and returns the
// response. It stops sending when the server has ended the stream.
func send(t *testing.T, c orbweaverv1.ControlServiceClient, name string, data []byte, chunk int) (*orbweaverv1.UploadPcapResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := c.UploadPcap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&orbweaverv1.UploadPcapRequest{Msg: &orbweaverv1.UploadPcapRequest_Start{
		Start: &orbweaverv1.UploadStart{Name: name, SizeBytes: uint64(len(data))}}}); err != nil {
		t.Fatal(err)
	}
	if err := sendData(s, data, chunk); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return s.CloseAndRecv()
}

func sendData(s orbweaverv1.ControlService_UploadPcapClient, data []byte, chunk int) error {
	for len(data) > 0 {
		n := min(chunk, len(data))
		if err := s.Send(&orbweaverv1.UploadPcapRequest{Msg: &orbweaverv1.UploadPcapRequest_Data{Data: data[:n]}}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// call is the part of a call the tests compare.
type call struct {
	RequestID string `json:"request_id"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Query     string `json:"query"`
	Status    int    `json:"status"`
}

func sortCalls(cs []call) []call {
	slices.SortFunc(cs, func(a, b call) int {
		return strings.Compare(a.RequestID+a.Method+a.Path, b.RequestID+b.Method+b.Path)
	})
	return cs
}

func truth(t *testing.T, name string) []call {
	t.Helper()
	var cs []call
	if err := json.Unmarshal(repoFile(t, "testdata/pcaps/"+name), &cs); err != nil {
		t.Fatal(err)
	}
	return sortCalls(cs)
}

// stored returns the calls stored under agentID.
func (e *env) stored(t *testing.T, agentID string) []call {
	t.Helper()
	rows, err := e.db.Query(context.Background(), `SELECT COALESCE(x_request_id, ''), COALESCE(method, ''), COALESCE(path, ''),
		COALESCE(query, ''), COALESCE(status, 0) FROM http_calls WHERE agent_id = $1`, agentID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var cs []call
	for rows.Next() {
		var c call
		if err := rows.Scan(&c.RequestID, &c.Method, &c.Path, &c.Query, &c.Status); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return sortCalls(cs)
}

func (e *env) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// agent returns the upload agent's mode, name, hostname and state.
func (e *env) agent(t *testing.T, id string) (mode, name, hostname, state string) {
	t.Helper()
	err := e.db.QueryRow(context.Background(), `SELECT COALESCE(mode, ''), name, hostname, state FROM agents WHERE id = $1`, id).
		Scan(&mode, &name, &hostname, &state)
	if err != nil {
		t.Fatalf("agent %s: %v", id, err)
	}
	return mode, name, hostname, state
}

// decodeOffline decodes a classic pcap with the pipeline as the uploader
// does, stopping at the first read error, and returns its calls.
func decodeOffline(t *testing.T, data []byte) []call {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var cs []call
	p := pipeline.New(pipeline.Config{}, func(c *model.HTTPCall) {
		cs = append(cs, call{RequestID: c.XRequestID, Method: c.Method, Path: c.Path, Query: c.Query, Status: max(c.Status, 0)})
	})
	var lastTick time.Time
	for {
		pkt, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		p.Packet(r.LinkType(), pkt, ci.Timestamp)
		if ci.Timestamp.Sub(lastTick) >= tickEvery {
			lastTick = ci.Timestamp
			p.Tick(ci.Timestamp)
		}
	}
	p.Close()
	return sortCalls(cs)
}

func (e *env) list(t *testing.T) []*orbweaverv1.Upload {
	t.Helper()
	resp, err := e.client.ListUploads(context.Background(), &orbweaverv1.ListUploadsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetUploads()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), substr) {
		t.Fatalf("error = %v, want %s containing %q", err, code, substr)
	}
}

func TestUploadPcap(t *testing.T) {
	e := startEnv(t, Config{BatchCalls: 7}, nil)
	data := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	resp, err := send(t, e.client, "keepalive", data, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetBytes() != uint64(len(data)) || resp.GetPackets() != 162 || resp.GetCalls() != 30 ||
		resp.GetParseErrors() != 0 || resp.GetError() != "" {
		t.Fatalf("response = %v, want %d bytes, 162 packets, 30 calls, no errors", resp, len(data))
	}
	if got, want := e.stored(t, resp.GetAgentId()), truth(t, "http_keepalive.truth.json"); !slices.Equal(got, want) {
		t.Fatalf("stored calls:\n%v\nwant\n%v", got, want)
	}
	mode, name, hostname, state := e.agent(t, resp.GetAgentId())
	if mode != "upload" || name != "keepalive" || !strings.HasPrefix(hostname, "127.0.0.1:") || state != agentStopped {
		t.Errorf("agent = mode %q name %q hostname %q state %q, want upload, keepalive, 127.0.0.1:*, stopped", mode, name, hostname, state)
	}
	// 30 calls in batches of 7: sequences 1..5 of one boot.
	if n := e.count(t, `SELECT count(*) FROM ingested_batches WHERE agent_id = $1`, resp.GetAgentId()); n != 5 {
		t.Errorf("%d batches stored, want 5", n)
	}
	ups := e.list(t)
	if len(ups) != 1 || ups[0].GetState() != stateDone || ups[0].GetCallsStored() != 30 || ups[0].GetCalls() != 30 ||
		ups[0].GetUploadId() != resp.GetUploadId() || ups[0].GetAgentId() != resp.GetAgentId() || ups[0].GetError() != "" {
		t.Errorf("ListUploads = %v", ups)
	}

	// A second upload gets its own agent, named "upload" by default.
	resp2, err := send(t, e.client, "", data, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if resp2.GetAgentId() == resp.GetAgentId() || resp2.GetCalls() != 30 {
		t.Fatalf("second upload = %v", resp2)
	}
	if _, name, _, _ := e.agent(t, resp2.GetAgentId()); name != "upload" {
		t.Errorf("default name = %q, want upload", name)
	}
	if n := e.count(t, `SELECT count(*) FROM http_calls`); n != 60 {
		t.Errorf("%d calls in all, want 60", n)
	}
}

func TestUploadPcapng(t *testing.T) {
	e := startEnv(t, Config{}, nil)
	src := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	r, err := pcapgo.NewReader(bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := pcapgo.NewNgWriter(&buf, r.LinkType())
	if err != nil {
		t.Fatal(err)
	}
	for {
		pkt, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WritePacket(ci, pkt); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	resp, err := send(t, e.client, "ng", buf.Bytes(), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetPackets() != 162 || resp.GetCalls() != 30 || resp.GetError() != "" || resp.GetBytes() != uint64(buf.Len()) {
		t.Fatalf("response = %v", resp)
	}
	if got, want := e.stored(t, resp.GetAgentId()), truth(t, "http_keepalive.truth.json"); !slices.Equal(got, want) {
		t.Fatalf("stored calls:\n%v\nwant\n%v", got, want)
	}
}

func TestUploadTruncated(t *testing.T) {
	e := startEnv(t, Config{}, nil)
	data := repoFile(t, "testdata/pcaps/truncated.pcap")
	resp, err := send(t, e.client, "cut", data, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.GetError(), "truncated") || resp.GetPackets() != 81 {
		t.Fatalf("response = %v, want 81 packets and an error about the truncation", resp)
	}
	want := decodeOffline(t, data)
	got := e.stored(t, resp.GetAgentId())
	if !slices.Equal(got, want) || resp.GetCalls() != uint64(len(want)) {
		t.Fatalf("stored calls:\n%v\nwant (offline decode)\n%v", got, want)
	}
	// Every exchange of the truth (responses complete before the cut) is there.
	for _, c := range truth(t, "truncated.truth.json") {
		if !slices.Contains(got, c) {
			t.Errorf("missing %v", c)
		}
	}
	ups := e.list(t)
	if len(ups) != 1 || ups[0].GetState() != stateDone || !strings.Contains(ups[0].GetError(), "truncated") {
		t.Errorf("ListUploads = %v", ups)
	}
}

func TestUploadCorrupt(t *testing.T) {
	e := startEnv(t, Config{}, nil)
	data := bytes.Clone(repoFile(t, "testdata/pcaps/http_keepalive.pcap"))
	// Give the 82nd record an impossible capture length.
	off := 24
	for range 81 {
		off += 16 + int(binary.LittleEndian.Uint32(data[off+8:]))
	}
	binary.LittleEndian.PutUint32(data[off+8:], 0xfffffff0)
	resp, err := send(t, e.client, "corrupt", data, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.GetError(), "corrupt capture after 81 packets") || resp.GetPackets() != 81 {
		t.Fatalf("response = %v, want 81 packets and an error about the corruption", resp)
	}
	want := decodeOffline(t, data[:off])
	if got := e.stored(t, resp.GetAgentId()); !slices.Equal(got, want) || len(want) < 14 {
		t.Fatalf("stored calls:\n%v\nwant (offline decode of the records before)\n%v", got, want)
	}
}

func TestUploadSizeLimit(t *testing.T) {
	const limit = 30000
	e := startEnv(t, Config{MaxBytes: limit}, nil)
	data := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	_, err := send(t, e.client, "big", data, 4096)
	checkCode(t, err, codes.ResourceExhausted, "exceeds the 30000-byte limit; calls decoded from the first 30000 bytes were stored")
	var agentID string
	if err := e.db.QueryRow(context.Background(), `SELECT id::text FROM agents WHERE mode = 'upload'`).Scan(&agentID); err != nil {
		t.Fatal(err)
	}
	want := decodeOffline(t, data[:limit])
	if len(want) == 0 {
		t.Fatal("no call in the first bytes: bad test")
	}
	if got := e.stored(t, agentID); !slices.Equal(got, want) {
		t.Fatalf("stored calls:\n%v\nwant (offline decode of the first %d bytes)\n%v", got, limit, want)
	}
	ups := e.list(t)
	if len(ups) != 1 || ups[0].GetState() != stateFailed || ups[0].GetBytesReceived() != limit ||
		ups[0].GetCallsStored() != uint64(len(want)) || !strings.Contains(ups[0].GetError(), "limit") {
		t.Errorf("ListUploads = %v", ups)
	}
	if _, _, _, state := e.agent(t, agentID); state != agentStopped {
		t.Errorf("agent state %q, want stopped", state)
	}
}

func TestUploadBadInput(t *testing.T) {
	e := startEnv(t, Config{}, nil)
	ctx := context.Background()

	// Data before start.
	s, err := e.client.UploadPcap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sendData(s, []byte{1, 2, 3}, 3); err != nil {
		t.Fatal(err)
	}
	_, err = s.CloseAndRecv()
	checkCode(t, err, codes.InvalidArgument, "first message must be start")

	// Not a capture.
	garbage := bytes.Repeat([]byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n"), 500)
	_, err = send(t, e.client, "garbage", garbage, 4096)
	checkCode(t, err, codes.InvalidArgument, "not a pcap or pcapng file")

	// Empty.
	_, err = send(t, e.client, "empty", nil, 1)
	checkCode(t, err, codes.InvalidArgument, "empty")

	// Gzip.
	_, err = send(t, e.client, "gz", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0}, 4096)
	checkCode(t, err, codes.InvalidArgument, "gzip")

	// Cut inside the header.
	keepalive := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	_, err = send(t, e.client, "short", keepalive[:10], 4096)
	checkCode(t, err, codes.InvalidArgument, "ends inside its header")

	// Unsupported link type (802.11).
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeIEEE802_11); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: 4, Length: 4}, []byte{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	_, err = send(t, e.client, "usb", buf.Bytes(), 4096)
	checkCode(t, err, codes.InvalidArgument, "unsupported link type")

	// Start twice.
	s, err = e.client.UploadPcap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Send(&orbweaverv1.UploadPcapRequest{Msg: &orbweaverv1.UploadPcapRequest_Start{Start: &orbweaverv1.UploadStart{}}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.CloseAndRecv()
	checkCode(t, err, codes.InvalidArgument, "start sent twice")

	if n := e.count(t, `SELECT count(*) FROM http_calls`); n != 0 {
		t.Errorf("%d calls stored, want 0", n)
	}
	if n := e.count(t, `SELECT count(*) FROM agents`); n != 0 {
		t.Errorf("%d agents created, want 0", n)
	}
	ups := e.list(t)
	if len(ups) != 6 { // data-before-start is refused before it becomes an upload
		t.Fatalf("ListUploads has %d uploads, want 6", len(ups))
	}
	for _, up := range ups {
		if up.GetState() != stateFailed || up.GetError() == "" {
			t.Errorf("upload %s: state %q error %q, want failed with an error", up.GetName(), up.GetState(), up.GetError())
		}
	}
}

func TestUploadProgress(t *testing.T) {
	e := startEnv(t, Config{KeepFinished: 1}, nil)
	data := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := e.client.UploadPcap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&orbweaverv1.UploadPcapRequest{Msg: &orbweaverv1.UploadPcapRequest_Start{
		Start: &orbweaverv1.UploadStart{Name: "slow", SizeBytes: uint64(len(data))}}}); err != nil {
		t.Fatal(err)
	}
	half := 8 * 4096
	if err := sendData(s, data[:half], 4096); err != nil {
		t.Fatal(err)
	}
	var up *orbweaverv1.Upload
	waitFor(t, "half the file received", func() bool {
		ups := e.list(t)
		if len(ups) == 1 {
			up = ups[0]
		}
		return up != nil && up.GetBytesReceived() == uint64(half)
	})
	if up.GetState() != stateReceiving || up.GetName() != "slow" || up.GetSizeBytes() != uint64(len(data)) ||
		up.GetPackets() == 0 || up.GetStarted() == nil {
		t.Errorf("in progress: %v", up)
	}
	if mode, _, _, state := e.agent(t, up.GetAgentId()); mode != "upload" || state != agentCapturing {
		t.Errorf("agent mode %q state %q, want upload capturing", mode, state)
	}
	if err := sendData(s, data[half:], 4096); err != nil {
		t.Fatal(err)
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	ups := e.list(t)
	if len(ups) != 1 || ups[0].GetState() != stateDone || ups[0].GetBytesReceived() != uint64(len(data)) ||
		ups[0].GetPackets() != 162 || ups[0].GetCalls() != 30 || ups[0].GetCallsStored() != 30 || ups[0].GetUploadId() != resp.GetUploadId() {
		t.Errorf("done: %v", ups)
	}
	if _, _, _, state := e.agent(t, resp.GetAgentId()); state != agentStopped {
		t.Errorf("agent state %q, want stopped", state)
	}

	// KeepFinished: 1 keeps only the latest finished upload.
	resp2, err := send(t, e.client, "next", data, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if ups := e.list(t); len(ups) != 1 || ups[0].GetUploadId() != resp2.GetUploadId() {
		t.Errorf("after a second upload: %v", ups)
	}
}

func TestUploadCancel(t *testing.T) {
	e := startEnv(t, Config{BatchCalls: 1}, nil)
	data := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := e.client.UploadPcap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&orbweaverv1.UploadPcapRequest{Msg: &orbweaverv1.UploadPcapRequest_Start{
		Start: &orbweaverv1.UploadStart{Name: "cancelled"}}}); err != nil {
		t.Fatal(err)
	}
	if err := sendData(s, data[:30000], 4096); err != nil {
		t.Fatal(err)
	}
	var up *orbweaverv1.Upload
	waitFor(t, "calls stored", func() bool {
		ups := e.list(t)
		up = nil
		if len(ups) == 1 {
			up = ups[0]
		}
		return up != nil && up.GetBytesReceived() == 30000 && up.GetCallsStored() > 0
	})
	cancel()
	waitFor(t, "upload failed", func() bool {
		ups := e.list(t)
		return len(ups) == 1 && ups[0].GetState() == stateFailed
	})
	up = e.list(t)[0]
	if up.GetError() != "client cancelled" {
		t.Errorf("error %q, want client cancelled", up.GetError())
	}
	// What was stored stays, and is counted.
	if n := e.count(t, `SELECT count(*) FROM http_calls WHERE agent_id = $1`, up.GetAgentId()); n == 0 || uint64(n) != up.GetCallsStored() {
		t.Errorf("%d calls stored, ListUploads says %d", n, up.GetCallsStored())
	}
	if _, _, _, state := e.agent(t, up.GetAgentId()); state != agentStopped {
		t.Errorf("agent state %q, want stopped", state)
	}
}

// flakyStore fails some InsertCallBatch calls: in commitThenFail, after
// storing the batch (a lost acknowledgement); in fail, without storing.
type flakyStore struct {
	Store
	mu             sync.Mutex
	n              int
	commitThenFail map[int]bool
	fail           func(n int) bool
}

func (f *flakyStore) InsertCallBatch(ctx context.Context, b *orbweaverv1.CallBatch) (store.BatchResult, error) {
	f.mu.Lock()
	f.n++
	n := f.n
	f.mu.Unlock()
	if f.fail != nil && f.fail(n) {
		return store.BatchResult{}, errors.New("injected failure")
	}
	res, err := f.Store.InsertCallBatch(ctx, b)
	if err == nil && f.commitThenFail[n] {
		return store.BatchResult{}, errors.New("injected failure after commit")
	}
	return res, err
}

func TestUploadRetriesStoreFailures(t *testing.T) {
	e := startEnv(t, Config{BatchCalls: 7}, func(s Store) Store {
		return &flakyStore{Store: s, commitThenFail: map[int]bool{1: true, 4: true}, fail: func(n int) bool { return n == 6 || n == 7 }}
	})
	data := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	resp, err := send(t, e.client, "flaky", data, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.stored(t, resp.GetAgentId()), truth(t, "http_keepalive.truth.json"); !slices.Equal(got, want) {
		t.Fatalf("stored %d calls:\n%v\nwant\n%v", len(got), got, want)
	}
	if ups := e.list(t); ups[0].GetCallsStored() != 30 {
		t.Errorf("calls_stored = %d, want 30", ups[0].GetCallsStored())
	}
}

func TestUploadStoreDown(t *testing.T) {
	e := startEnv(t, Config{}, func(s Store) Store {
		return &flakyStore{Store: s, fail: func(int) bool { return true }}
	})
	data := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	_, err := send(t, e.client, "down", data, 4096)
	checkCode(t, err, codes.Unavailable, "after 4 attempts")
	ups := e.list(t)
	if len(ups) != 1 || ups[0].GetState() != stateFailed || !strings.Contains(ups[0].GetError(), "injected failure") {
		t.Errorf("ListUploads = %v", ups)
	}
}
