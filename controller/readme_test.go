package controller_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/orbweaver/orbweaver/agent"
	"github.com/orbweaver/orbweaver/controller"
	"github.com/orbweaver/orbweaver/internal/auth"
	"github.com/orbweaver/orbweaver/internal/pgtest"
)

// TestREADMEGrpcurlExamples runs every grpcurl command of the README's
// "Operating with grpcurl" section with the real grpcurl binary (installed
// in .bin/ by make setup) against a controller with an agent named
// demo-agent, so the documentation cannot drift from the API.
func TestREADMEGrpcurlExamples(t *testing.T) {
	grpcurl := repoFile(t, ".bin/grpcurl")
	if _, err := os.Stat(grpcurl); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("grpcurl missing (make setup installs it): %v", err)
		}
		t.Skipf("grpcurl not installed in .bin/ (run make setup): %v", err)
	}
	dir := t.TempDir()
	tokens, _, err := auth.EnsureTokens(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := tokens.OperatorToken("admin")
	e := startController(t, pgtest.URL(t), "", func(c *controller.Config) { c.Tokens = tokens })
	r := startAgent(t, agent.Config{Controller: e.addr, Name: "demo-agent", File: repoFile(t, "testdata/pcaps/http_keepalive.pcap"),
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.BearerToken(tokens.EnrollmentToken(), false))}})
	rc, _, err := newReflectClient(context.Background(), controlConn(t, e.addr, grpc.WithPerRPCCredentials(auth.BearerToken(admin, false))))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "agent registered", func() bool { return agentState(t, rc, r.a.ID()) != "" })

	cmds := readmeGrpcurlCommands(t)
	if len(cmds) < 11 {
		t.Fatalf("found %d grpcurl examples in the README, want at least 11", len(cmds))
	}
	// Auth is on: without the token the same call is refused.
	noToken := exec.Command(repoFile(t, ".bin/grpcurl"), "-plaintext", e.addr, "orbweaver.v1.ControlService/ListAgents")
	if out, err := noToken.CombinedOutput(); err == nil || !strings.Contains(string(out), "Unauthenticated") || !strings.Contains(string(out), "missing bearer token") {
		t.Errorf("ListAgents without a token: err %v, output:\n%s", err, out)
	}
	for _, c := range cmds {
		cmd := exec.Command("bash", "-c", c)
		cmd.Env = append(os.Environ(), "C="+e.addr, "TOKEN="+admin, "PATH="+repoFile(t, ".bin")+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("README example failed: %s\n%v\n%s", c, err, out)
			continue
		}
		if strings.Contains(c, "UpdateConfig") && strings.Contains(c, "update_mask") && !strings.Contains(string(out), `"bpfFilter": "tcp port 18080"`) {
			t.Errorf("UpdateConfig example did not set the filter:\n%s", out)
		}
	}
}

// readmeGrpcurlCommands returns the grpcurl lines of README.md, joining
// backslash continuations.
func readmeGrpcurlCommands(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(repoFile(t, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if cur != "" {
			cur += " " + strings.TrimSpace(strings.TrimSuffix(line, "\\"))
			if !strings.HasSuffix(line, "\\") {
				cmds = append(cmds, cur)
				cur = ""
			}
			continue
		}
		if strings.HasPrefix(line, "grpcurl ") {
			if strings.HasSuffix(line, "\\") {
				cur = strings.TrimSuffix(line, "\\")
				continue
			}
			cmds = append(cmds, line)
		}
	}
	return cmds
}
