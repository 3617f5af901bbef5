package auth

import (
	"fmt"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// pki is a development CA with a server certificate for the loopback
// address, an agent client certificate, and a client certificate from an
// unrelated CA.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey, strangerCert, strangerKey string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	var p pki
	var err error
	dir := t.TempDir()
	if p.ca, err = WriteSelfSignedCA(dir); err != nil {
		t.Fatal(err)
	}
	if p.serverCert, p.serverKey, err = IssueCert(dir, "controller", []string{"127.0.0.1", "localhost"}, false); err != nil {
		t.Fatal(err)
	}
	if p.clientCert, p.clientKey, err = IssueCert(dir, "agent", nil, true); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err = WriteSelfSignedCA(other); err != nil {
		t.Fatal(err)
	}
	if p.strangerCert, p.strangerKey, err = IssueCert(other, "stranger", nil, true); err != nil {
		t.Fatal(err)
	}
	return p
}

// credsOrFatal returns a function that fails t when given an error, so
// it can wrap ServerTLS and ClientTLS calls.
func credsOrFatal(t *testing.T) func(credentials.TransportCredentials, error) credentials.TransportCredentials {
	return func(c credentials.TransportCredentials, err error) credentials.TransportCredentials {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

func TestTLS(t *testing.T) {
	tt := newTestTokens(t)
	p := newPKI(t)
	mustCreds := credsOrFatal(t)
	addr := serve(t, tt.Tokens, ServerPolicy{}, mustCreds(ServerTLS(p.serverCert, p.serverKey, "")))
	otherCA, err := WriteSelfSignedCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		opts []grpc.DialOption
		code codes.Code
	}{
		{name: "TLS with the CA and bearer token", code: codes.OK, opts: []grpc.DialOption{
			grpc.WithTransportCredentials(mustCreds(ClientTLS(p.ca, "", "", ""))),
			grpc.WithPerRPCCredentials(BearerToken(tt.admin, true)),
		}},
		{name: "TLS by the localhost name", code: codes.OK, opts: []grpc.DialOption{
			grpc.WithTransportCredentials(mustCreds(ClientTLS(p.ca, "", "", "localhost"))),
			grpc.WithPerRPCCredentials(BearerToken(tt.admin, true)),
		}},
		{name: "TLS without a token", code: codes.Unauthenticated, opts: []grpc.DialOption{
			grpc.WithTransportCredentials(mustCreds(ClientTLS(p.ca, "", "", ""))),
		}},
		{name: "plaintext client", code: codes.Unavailable, opts: []grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(BearerToken(tt.admin, false)),
		}},
		{name: "server certificate from another CA", code: codes.Unavailable, opts: []grpc.DialOption{
			grpc.WithTransportCredentials(mustCreds(ClientTLS(otherCA, "", "", ""))),
			grpc.WithPerRPCCredentials(BearerToken(tt.admin, true)),
		}},
		{name: "wrong server name", code: codes.Unavailable, opts: []grpc.DialOption{
			grpc.WithTransportCredentials(mustCreds(ClientTLS(p.ca, "", "", "controller.example"))),
			grpc.WithPerRPCCredentials(BearerToken(tt.admin, true)),
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn := dial(t, addr, c.opts...)
			_, err := callControl(testCtx(t), conn, "ListAgents", false)
			if got := statusCode(err); got != c.code {
				t.Fatalf("ListAgents: %v, want code %v", err, c.code)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	tt := newTestTokens(t)
	addr := serve(t, tt.Tokens, ServerPolicy{}, nil)

	t.Run("requireTLS refuses a plaintext connection", func(t *testing.T) {
		_, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(BearerToken(tt.admin, true)))
		want := "grpc: the credentials require transport level security (use grpc.WithTransportCredentials() to set)"
		if err == nil || err.Error() != want {
			t.Fatalf("NewClient: %v, want %q", err, want)
		}
	})
	t.Run("plaintext loopback without requireTLS", func(t *testing.T) {
		conn := dial(t, addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(BearerToken(tt.viewer, false)))
		_, err := callControl(testCtx(t), conn, "ListAgents", false)
		checkStatus(t, err, codes.OK, "")
		_, err = callControl(testCtx(t), conn, "StopCapture", false)
		checkStatus(t, err, codes.PermissionDenied, "role viewer may not call orbweaver.v1.ControlService/StopCapture; it needs admin")
	})
	t.Run("token stays out of formatted output", func(t *testing.T) {
		b := BearerToken(tt.admin, true)
		for _, verb := range []string{"%v", "%+v", "%s", "%#v"} {
			if got := fmt.Sprintf(verb, b); got != "bearer token (redacted)" {
				t.Errorf("Sprintf(%s) = %q", verb, got)
			}
		}
	})
}

func TestMutualTLS(t *testing.T) {
	tt := newTestTokens(t)
	p := newPKI(t)
	mustCreds := credsOrFatal(t)
	creds := mustCreds(ServerTLS(p.serverCert, p.serverKey, p.ca))
	strict := serve(t, tt.Tokens, ServerPolicy{RequireAgentClientCert: true}, creds)
	optional := serve(t, tt.Tokens, ServerPolicy{}, creds)
	const agentID = "0b8f6a2e-1d3c-4e5f-8a9b-0c1d2e3f4a5b"
	noCertMsg := "missing client certificate: orbweaver.v1.AgentService requires a certificate issued by the controller's client CA"

	cases := []struct {
		name      string
		addr      string
		cert, key string
		token     string
		control   bool // call ControlService/ListAgents instead of AgentService/Connect
		code      codes.Code
		msg       string
	}{
		{name: "agent with client certificate", addr: strict, cert: p.clientCert, key: p.clientKey, token: tt.enroll, code: codes.OK},
		{name: "agent without client certificate", addr: strict, token: tt.enroll, code: codes.Unauthenticated, msg: noCertMsg},
		{name: "agent with certificate from another CA", addr: strict, cert: p.strangerCert, key: p.strangerKey, token: tt.enroll, code: codes.Unavailable},
		{name: "operator without client certificate", addr: strict, token: tt.admin, control: true, code: codes.OK},
		{name: "optional mTLS: agent without certificate", addr: optional, token: tt.enroll, code: codes.OK},
		{name: "optional mTLS: agent with certificate", addr: optional, cert: p.clientCert, key: p.clientKey, token: tt.enroll, code: codes.OK},
		{name: "optional mTLS: certificate from another CA", addr: optional, cert: p.strangerCert, key: p.strangerKey, token: tt.enroll, code: codes.Unavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mustCreds := credsOrFatal(t)
			conn := dial(t, c.addr,
				grpc.WithTransportCredentials(mustCreds(ClientTLS(p.ca, c.cert, c.key, ""))),
				grpc.WithPerRPCCredentials(BearerToken(c.token, true)))
			var err error
			if c.control {
				_, err = callControl(testCtx(t), conn, "ListAgents", false)
			} else {
				_, err = connectAgent(testCtx(t), conn, agentID)
			}
			if c.code == codes.Unavailable {
				if got := statusCode(err); got != c.code {
					t.Fatalf("got %v, want code %v", err, c.code)
				}
				return
			}
			checkStatus(t, err, c.code, c.msg)
		})
	}
}

func TestTLSFileErrors(t *testing.T) {
	p := newPKI(t)
	cases := []struct {
		name string
		err  func() error
	}{
		{name: "server key missing", err: func() error { _, err := ServerTLS(p.serverCert, p.serverKey+".missing", ""); return err }},
		{name: "client CA is not PEM", err: func() error { _, err := ServerTLS(p.serverCert, p.serverKey, p.serverKey); return err }},
		{name: "client cert without key", err: func() error { _, err := ClientTLS(p.ca, p.clientCert, "", ""); return err }},
		{name: "CA missing", err: func() error { _, err := ClientTLS(p.ca+".missing", "", "", ""); return err }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.err(); err == nil {
				t.Fatal("got nil error")
			}
		})
	}
}

func statusCode(err error) codes.Code { return status.Code(err) }
