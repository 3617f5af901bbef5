package auth

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const boundAgentID = "7f1c0a52-3b9e-4c1a-9d2e-5a6b7c8d9e0f"

// testTokens is a token set with one token of each kind.
type testTokens struct {
	*Tokens
	enroll, agent, admin, viewer string
}

func newTestTokens(t *testing.T) testTokens {
	t.Helper()
	tt := testTokens{enroll: newToken(), agent: newToken(), admin: newToken(), viewer: newToken()}
	var err error
	tt.Tokens, err = newTokens(tokenFile{
		AgentEnrollmentTokens: []string{tt.enroll},
		AgentTokens:           map[string]string{boundAgentID: tt.agent},
		Operators: []operatorToken{
			{Name: "alice", Role: RoleAdmin, Token: tt.admin},
			{Name: "grafana", Role: RoleViewer, Token: tt.viewer},
		},
	})
	if err != nil {
		t.Fatalf("newTokens: %v", err)
	}
	return tt
}

// agentStub answers Connect: it reads the Hello, checks the agent id against
// the token and returns the caller's identity in the "identity" trailer.
type agentStub struct {
	orbweaverv1.UnimplementedAgentServiceServer
}

func (agentStub) Connect(s grpc.BidiStreamingServer[orbweaverv1.AgentMessage, orbweaverv1.ControllerMessage]) error {
	m, err := s.Recv()
	if err != nil {
		return err
	}
	if err := CheckAgentID(s.Context(), m.GetHello().GetAgentId()); err != nil {
		return err
	}
	id, ok := AgentFromContext(s.Context())
	if !ok {
		return status.Error(codes.Internal, "no agent identity in context")
	}
	s.SetTrailer(metadata.Pairs("identity", id.String()))
	return nil
}

// controlStub answers every ControlService method with an empty response
// and the caller's identity in the "identity" trailer.
type controlStub struct {
	orbweaverv1.UnimplementedControlServiceServer
}

func whoami(ctx context.Context) {
	id, ok := OperatorFromContext(ctx)
	if !ok {
		return
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs("identity", id.String()))
}

func (controlStub) ListAgents(ctx context.Context, _ *orbweaverv1.ListAgentsRequest) (*orbweaverv1.ListAgentsResponse, error) {
	whoami(ctx)
	return &orbweaverv1.ListAgentsResponse{}, nil
}

func (controlStub) GetAgent(ctx context.Context, _ *orbweaverv1.GetAgentRequest) (*orbweaverv1.Agent, error) {
	whoami(ctx)
	return &orbweaverv1.Agent{}, nil
}

func (controlStub) StartCapture(ctx context.Context, _ *orbweaverv1.StartCaptureRequest) (*orbweaverv1.Agent, error) {
	whoami(ctx)
	return &orbweaverv1.Agent{}, nil
}

func (controlStub) StopCapture(ctx context.Context, _ *orbweaverv1.StopCaptureRequest) (*orbweaverv1.Agent, error) {
	whoami(ctx)
	return &orbweaverv1.Agent{}, nil
}

func (controlStub) GetConfig(ctx context.Context, _ *orbweaverv1.GetConfigRequest) (*orbweaverv1.GetConfigResponse, error) {
	whoami(ctx)
	return &orbweaverv1.GetConfigResponse{}, nil
}

func (controlStub) UpdateConfig(ctx context.Context, _ *orbweaverv1.UpdateConfigRequest) (*orbweaverv1.UpdateConfigResponse, error) {
	whoami(ctx)
	return &orbweaverv1.UpdateConfigResponse{}, nil
}

func (controlStub) GetDefaultConfig(ctx context.Context, _ *orbweaverv1.GetDefaultConfigRequest) (*orbweaverv1.GetDefaultConfigResponse, error) {
	whoami(ctx)
	return &orbweaverv1.GetDefaultConfigResponse{}, nil
}

func (controlStub) UpdateDefaultConfig(ctx context.Context, _ *orbweaverv1.UpdateDefaultConfigRequest) (*orbweaverv1.GetDefaultConfigResponse, error) {
	whoami(ctx)
	return &orbweaverv1.GetDefaultConfigResponse{}, nil
}

func (controlStub) ListUploads(ctx context.Context, _ *orbweaverv1.ListUploadsRequest) (*orbweaverv1.ListUploadsResponse, error) {
	whoami(ctx)
	return &orbweaverv1.ListUploadsResponse{}, nil
}

func (controlStub) UploadPcap(s grpc.ClientStreamingServer[orbweaverv1.UploadPcapRequest, orbweaverv1.UploadPcapResponse]) error {
	for {
		if _, err := s.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
	}
	whoami(s.Context())
	return s.SendAndClose(&orbweaverv1.UploadPcapResponse{})
}

// secretDesc is a service the auth package has no policy for.
var secretDesc = grpc.ServiceDesc{
	ServiceName: "orbweaver.test.Secret",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Peek",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { return &emptypb.Empty{}, nil }
			if icpt == nil {
				return h(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/orbweaver.test.Secret/Peek"}, h)
		},
	}},
}

// serve starts a gRPC server on a loopback port with the auth interceptors,
// the stub services, health, reflection and secretDesc; creds nil means
// plaintext. It returns the address.
func serve(t *testing.T, tokens *Tokens, p ServerPolicy, creds credentials.TransportCredentials) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	opts := tokens.ServerOptions(p)
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	srv := grpc.NewServer(opts...)
	orbweaverv1.RegisterAgentServiceServer(srv, agentStub{})
	orbweaverv1.RegisterControlServiceServer(srv, controlStub{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
	srv.RegisterService(&secretDesc, struct{}{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// withAuth adds one "authorization" header per value.
func withAuth(ctx context.Context, values ...string) context.Context {
	for _, v := range values {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
	}
	return ctx
}

// connectAgent opens AgentService/Connect, sends a Hello for agentID and
// returns the stream's final error (nil on success) and trailer.
func connectAgent(ctx context.Context, conn *grpc.ClientConn, agentID string) (metadata.MD, error) {
	s, err := orbweaverv1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		return nil, err
	}
	// A refused stream may fail Send with io.EOF; Recv has the status.
	_ = s.Send(&orbweaverv1.AgentMessage{Msg: &orbweaverv1.AgentMessage_Hello{Hello: &orbweaverv1.Hello{AgentId: agentID}}})
	_ = s.CloseSend()
	_, err = s.Recv()
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return s.Trailer(), err
}

// callControl calls a ControlService method with empty messages (a stream
// method as a client stream closed at once) and returns the trailer.
func callControl(ctx context.Context, conn *grpc.ClientConn, method string, stream bool) (metadata.MD, error) {
	full := "/orbweaver.v1.ControlService/" + method
	var tr metadata.MD
	if !stream {
		err := conn.Invoke(ctx, full, &emptypb.Empty{}, &emptypb.Empty{}, grpc.Trailer(&tr))
		return tr, err
	}
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, full, grpc.Trailer(&tr))
	if err != nil {
		return nil, err
	}
	if err := cs.CloseSend(); err != nil {
		return nil, err
	}
	err = cs.RecvMsg(&emptypb.Empty{})
	return tr, err
}

// checkStatus fails unless err has code want and, when want is not OK, the
// message wantMsg.
func checkStatus(t *testing.T, err error, want codes.Code, wantMsg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != want || (want != codes.OK && st.Message() != wantMsg) {
		t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), want, wantMsg)
	}
}

func TestControlServiceRoles(t *testing.T) {
	tt := newTestTokens(t)
	conn := dial(t, serve(t, tt.Tokens, ServerPolicy{}, nil))

	// Every ControlService method and whether viewers may call it. The
	// check below keeps this list in step with the generated service.
	methods := []struct {
		name         string
		read, stream bool
	}{
		{name: "ListAgents", read: true},
		{name: "GetAgent", read: true},
		{name: "StartCapture"},
		{name: "StopCapture"},
		{name: "GetConfig", read: true},
		{name: "UpdateConfig"},
		{name: "GetDefaultConfig", read: true},
		{name: "UpdateDefaultConfig"},
		{name: "UploadPcap", stream: true},
		{name: "ListUploads", read: true},
	}
	desc := orbweaverv1.ControlService_ServiceDesc
	if n := len(desc.Methods) + len(desc.Streams); n != len(methods) {
		t.Fatalf("ControlService has %d methods, the test lists %d: add the new ones", n, len(methods))
	}

	for _, m := range methods {
		method := "orbweaver.v1.ControlService/" + m.name
		viewerCode, viewerMsg, viewerWho := codes.OK, "", "operator grafana (viewer)"
		if !m.read {
			viewerCode, viewerMsg, viewerWho = codes.PermissionDenied, "role viewer may not call "+method+"; it needs admin", ""
		}
		cases := []struct {
			name string
			auth []string
			code codes.Code
			msg  string
			who  string
		}{
			{name: "admin", auth: []string{"Bearer " + tt.admin}, code: codes.OK, who: "operator alice (admin)"},
			{name: "viewer", auth: []string{"Bearer " + tt.viewer}, code: viewerCode, msg: viewerMsg, who: viewerWho},
			{name: "lowercase scheme", auth: []string{"bearer " + tt.admin}, code: codes.OK, who: "operator alice (admin)"},
			{name: "no token", code: codes.Unauthenticated, msg: "missing bearer token: pass -H 'authorization: Bearer <token>'"},
			{name: "invalid token", auth: []string{"Bearer " + newToken()}, code: codes.Unauthenticated, msg: "invalid token"},
			{name: "basic scheme", auth: []string{"Basic " + tt.admin}, code: codes.Unauthenticated, msg: "malformed authorization header: want 'Bearer <token>'"},
			{name: "bare token", auth: []string{tt.admin}, code: codes.Unauthenticated, msg: "malformed authorization header: want 'Bearer <token>'"},
			{name: "two headers", auth: []string{"Bearer " + tt.admin, "Bearer " + tt.viewer}, code: codes.Unauthenticated, msg: "multiple authorization headers: send exactly one"},
			{name: "enrollment token", auth: []string{"Bearer " + tt.enroll}, code: codes.PermissionDenied, msg: "agent token may not call " + method + "; it needs an operator token"},
			{name: "per-agent token", auth: []string{"Bearer " + tt.agent}, code: codes.PermissionDenied, msg: "agent token may not call " + method + "; it needs an operator token"},
		}
		for _, c := range cases {
			t.Run(m.name+"/"+c.name, func(t *testing.T) {
				tr, err := callControl(withAuth(testCtx(t), c.auth...), conn, m.name, m.stream)
				checkStatus(t, err, c.code, c.msg)
				if got := strings.Join(tr.Get("identity"), ","); got != c.who {
					t.Errorf("identity seen by the handler = %q, want %q", got, c.who)
				}
			})
		}
	}
}

func TestAgentService(t *testing.T) {
	tt := newTestTokens(t)
	conn := dial(t, serve(t, tt.Tokens, ServerPolicy{}, nil))
	const newAgent = "0b8f6a2e-1d3c-4e5f-8a9b-0c1d2e3f4a5b"
	const method = "orbweaver.v1.AgentService/Connect"

	cases := []struct {
		name    string
		auth    []string
		agentID string
		code    codes.Code
		msg     string
		who     string
	}{
		{name: "enrollment token", auth: []string{"Bearer " + tt.enroll}, agentID: newAgent, who: "agent (enrollment token)"},
		{name: "per-agent token for its agent", auth: []string{"Bearer " + tt.agent}, agentID: boundAgentID, who: "agent " + boundAgentID},
		{name: "per-agent token for another agent", auth: []string{"Bearer " + tt.agent}, agentID: newAgent,
			code: codes.PermissionDenied, msg: `token belongs to agent "` + boundAgentID + `", not "` + newAgent + `"`},
		{name: "enrollment token for an agent with its own token", auth: []string{"Bearer " + tt.enroll}, agentID: boundAgentID,
			code: codes.PermissionDenied, msg: `agent "` + boundAgentID + `" has its own token; the enrollment token may not be used for it`},
		{name: "admin token", auth: []string{"Bearer " + tt.admin}, agentID: newAgent,
			code: codes.PermissionDenied, msg: "operator token may not call " + method + "; it needs an agent token"},
		{name: "viewer token", auth: []string{"Bearer " + tt.viewer}, agentID: newAgent,
			code: codes.PermissionDenied, msg: "operator token may not call " + method + "; it needs an agent token"},
		{name: "no token", agentID: newAgent,
			code: codes.Unauthenticated, msg: "missing bearer token: pass -H 'authorization: Bearer <token>'"},
		{name: "invalid token", auth: []string{"Bearer " + newToken()}, agentID: newAgent, code: codes.Unauthenticated, msg: "invalid token"},
		{name: "empty bearer", auth: []string{"Bearer "}, agentID: newAgent,
			code: codes.Unauthenticated, msg: "malformed authorization header: want 'Bearer <token>'"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr, err := connectAgent(withAuth(testCtx(t), c.auth...), conn, c.agentID)
			checkStatus(t, err, c.code, c.msg)
			if got := strings.Join(tr.Get("identity"), ","); got != c.who {
				t.Errorf("identity seen by the handler = %q, want %q", got, c.who)
			}
		})
	}
}

func TestOpenAndUnknownServices(t *testing.T) {
	tt := newTestTokens(t)
	conn := dial(t, serve(t, tt.Tokens, ServerPolicy{}, nil))

	t.Run("reflection without token", func(t *testing.T) {
		ctx := testCtx(t)
		s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatalf("open reflection stream: %v", err)
		}
		if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatalf("send: %v", err)
		}
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		_ = s.CloseSend()
		var names []string
		for _, svc := range resp.GetListServicesResponse().GetService() {
			names = append(names, svc.GetName())
		}
		for _, want := range []string{"orbweaver.v1.AgentService", "orbweaver.v1.ControlService"} {
			if !strings.Contains(strings.Join(names, " "), want) {
				t.Errorf("reflection lists %v, want %s among them", names, want)
			}
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("reflection stream end: %v, want EOF", err)
		}
	})
	t.Run("health without token", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(conn).Check(testCtx(t), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("health check: %v", err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health = %v, want SERVING", resp.GetStatus())
		}
	})
	t.Run("unknown service denied even to admin", func(t *testing.T) {
		ctx := withAuth(testCtx(t), "Bearer "+tt.admin)
		err := conn.Invoke(ctx, "/orbweaver.test.Secret/Peek", &emptypb.Empty{}, &emptypb.Empty{})
		checkStatus(t, err, codes.PermissionDenied, "no access policy for orbweaver.test.Secret/Peek: denied")
	})
	t.Run("nil tokens refuse everything", func(t *testing.T) {
		conn := dial(t, serve(t, nil, ServerPolicy{}, nil))
		_, err := callControl(withAuth(testCtx(t), "Bearer "+tt.admin), conn, "ListAgents", false)
		checkStatus(t, err, codes.Unauthenticated, "invalid token")
	})
}

func TestCheckAgentIDWithoutInterceptors(t *testing.T) {
	if err := CheckAgentID(t.Context(), boundAgentID); err != nil {
		t.Errorf("CheckAgentID without an identity = %v, want nil", err)
	}
	if _, ok := AgentFromContext(t.Context()); ok {
		t.Error("AgentFromContext on a bare context: ok = true")
	}
}

// lockedBuffer is a log sink safe to read while the server writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRefusalLogHasNoSecret(t *testing.T) {
	tt := newTestTokens(t)
	var logs lockedBuffer
	conn := dial(t, serve(t, tt.Tokens, ServerPolicy{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, nil))
	wrong := newToken()
	_, err := callControl(withAuth(testCtx(t), "Bearer "+wrong), conn, "ListAgents", false)
	checkStatus(t, err, codes.Unauthenticated, "invalid token")
	_, err = callControl(withAuth(testCtx(t), "Bearer "+tt.viewer), conn, "StopCapture", false)
	checkStatus(t, err, codes.PermissionDenied, "role viewer may not call orbweaver.v1.ControlService/StopCapture; it needs admin")

	out := logs.String()
	for _, want := range []string{
		`msg="rpc refused" method=orbweaver.v1.ControlService/ListAgents code=Unauthenticated reason="invalid token" peer=127.0.0.1:`,
		`msg="rpc refused" method=orbweaver.v1.ControlService/StopCapture code=PermissionDenied`,
		`who="operator grafana (viewer)"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{wrong, tt.viewer} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds a token:\n%s", out)
		}
	}
}
