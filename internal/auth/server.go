package auth

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// Services callable without a token: they expose no data, and grpcurl needs
// reflection to discover the API.
var publicServices = map[string]bool{
	"grpc.reflection.v1.ServerReflection":      true,
	"grpc.reflection.v1alpha.ServerReflection": true,
	"grpc.health.v1.Health":                    true,
}

// Identity is who an authenticated call comes from.
type Identity struct {
	// Agent is true for an agent token, false for an operator token.
	Agent bool
	// AgentID is the agent a per-agent token is bound to; empty for the
	// enrollment token and for operators.
	AgentID string
	// Operator is the operator's name; empty for agents.
	Operator string
	// Role is the operator's role; empty for agents.
	Role Role
}

// String names the identity for logs; it holds no secret.
func (id Identity) String() string {
	switch {
	case id.Agent && id.AgentID != "":
		return "agent " + id.AgentID
	case id.Agent:
		return "agent (enrollment token)"
	default:
		return fmt.Sprintf("operator %s (%s)", id.Operator, id.Role)
	}
}

type identityKey struct{}

// authenticated is what the interceptors put in the call's context.
type authenticated struct {
	id     Identity
	tokens *Tokens
}

// AgentFromContext returns the agent identity of an AgentService call
// authorized by the interceptors; ok is false otherwise.
func AgentFromContext(ctx context.Context) (id Identity, ok bool) {
	a, ok := ctx.Value(identityKey{}).(authenticated)
	if !ok || !a.id.Agent {
		return Identity{}, false
	}
	return a.id, true
}

// OperatorFromContext returns the operator identity of a ControlService
// call authorized by the interceptors (for audit logs); ok is false otherwise.
func OperatorFromContext(ctx context.Context) (id Identity, ok bool) {
	a, ok := ctx.Value(identityKey{}).(authenticated)
	if !ok || a.id.Agent {
		return Identity{}, false
	}
	return a.id, true
}

// CheckAgentID checks that the caller may act as agentID (the stream's
// hello.agent_id): a per-agent token only for its own id, the enrollment
// token for any id that has no token of its own. It returns a
// PermissionDenied status error otherwise, and nil when ctx carries no
// identity at all, i.e. the server runs without these interceptors.
func CheckAgentID(ctx context.Context, agentID string) error {
	a, ok := ctx.Value(identityKey{}).(authenticated)
	switch {
	case !ok:
		return nil
	case !a.id.Agent:
		return status.Errorf(codes.PermissionDenied, "%s may not act as an agent", a.id)
	case a.id.AgentID != "" && a.id.AgentID != agentID:
		return status.Errorf(codes.PermissionDenied, "token belongs to agent %q, not %q", a.id.AgentID, agentID)
	case a.id.AgentID == "" && a.tokens.boundAgents[agentID]:
		return status.Errorf(codes.PermissionDenied, "agent %q has its own token; the enrollment token may not be used for it", agentID)
	}
	return nil
}

// ServerPolicy tunes the checks of Tokens.ServerOptions. The zero value
// checks tokens only and logs nothing.
type ServerPolicy struct {
	// RequireAgentClientCert refuses AgentService calls whose connection has
	// no client certificate verified against the client CA (see ServerTLS
	// with a clientCAFile). Operators are not asked for one.
	RequireAgentClientCert bool
	// Logger receives one warning per refused call (method, peer, code,
	// reason, and who when known; never a token). Nil logs nothing.
	Logger *slog.Logger
}

// ServerOptions returns the interceptors that authenticate and authorize
// every call to the server; put them before other interceptors. Calls to
// unknown services are denied. A nil t refuses every token.
func (t *Tokens) ServerOptions(p ServerPolicy) []grpc.ServerOption {
	g := &guard{tokens: t, requireAgentCert: p.RequireAgentClientCert, log: p.Logger}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(g.unary),
		grpc.ChainStreamInterceptor(g.stream),
	}
}

type guard struct {
	tokens           *Tokens
	requireAgentCert bool
	log              *slog.Logger
}

func (g *guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := g.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (g *guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := g.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// authorize decides one call and returns the context carrying the caller's
// identity, or a status error (logged once here).
func (g *guard) authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	method := strings.TrimPrefix(fullMethod, "/")
	service, name, _ := strings.Cut(method, "/")
	if publicServices[service] {
		return ctx, nil
	}
	var id Identity
	var err error
	switch service {
	case orbweaverv1.AgentService_ServiceDesc.ServiceName:
		if g.requireAgentCert && !hasVerifiedClientCert(ctx) {
			err = status.Errorf(codes.Unauthenticated, "missing client certificate: %s requires a certificate issued by the controller's client CA", service)
			break
		}
		if id, err = g.identify(ctx); err == nil && !id.Agent {
			err = status.Errorf(codes.PermissionDenied, "operator token may not call %s; it needs an agent token", method)
		}
	case orbweaverv1.ControlService_ServiceDesc.ServiceName:
		if id, err = g.identify(ctx); err != nil {
			break
		}
		need := RoleAdmin
		if strings.HasPrefix(name, "List") || strings.HasPrefix(name, "Get") {
			need = RoleViewer
		}
		switch {
		case id.Agent:
			err = status.Errorf(codes.PermissionDenied, "agent token may not call %s; it needs an operator token", method)
		case !id.Role.allows(need):
			err = status.Errorf(codes.PermissionDenied, "role %s may not call %s; it needs %s", id.Role, method, need)
		}
	default:
		err = status.Errorf(codes.PermissionDenied, "no access policy for %s: denied", method)
	}
	if err != nil {
		attrs := []any{"method", method, "code", status.Code(err).String(), "reason", status.Convert(err).Message()}
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			attrs = append(attrs, "peer", p.Addr.String())
		}
		if id != (Identity{}) {
			attrs = append(attrs, "who", id.String())
		}
		g.log.Warn("rpc refused", attrs...)
		return nil, err
	}
	return context.WithValue(ctx, identityKey{}, authenticated{id: id, tokens: g.tokens}), nil
}

// identify finds the identity of the call's bearer token.
func (g *guard) identify(ctx context.Context) (Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	switch len(vals) {
	case 0:
		return Identity{}, status.Error(codes.Unauthenticated, "missing bearer token: pass -H 'authorization: Bearer <token>'")
	case 1:
	default:
		return Identity{}, status.Error(codes.Unauthenticated, "multiple authorization headers: send exactly one")
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return Identity{}, status.Error(codes.Unauthenticated, "malformed authorization header: want 'Bearer <token>'")
	}
	id, ok := g.tokens.lookup(token)
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "invalid token")
	}
	return id, nil
}

// hasVerifiedClientCert reports whether the call's connection presented a
// client certificate that the TLS handshake verified.
func hasVerifiedClientCert(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && len(ti.State.VerifiedChains) > 0
}
