package auth

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Well-formed tokens for token-file fixtures (43 base64url characters).
var (
	tokA = strings.Repeat("A", 43)
	tokB = strings.Repeat("B", 43)
	tokC = strings.Repeat("C", 43)
)

func writeFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.json")
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // beat the umask
		t.Fatal(err)
	}
	return path
}

func TestLoadTokensErrors(t *testing.T) {
	cases := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string // after "tokens file <path>: "
	}{
		{
			name:    "unknown role",
			content: `{"operators":[{"name":"alice","role":"root","token":"` + tokA + `"}]}`,
			want:    `operators[0].role: unknown role "root" (want "viewer" or "admin")`,
		},
		{
			name:    "empty operator token",
			content: `{"operators":[{"name":"alice","role":"admin","token":""}]}`,
			want:    `operators[0].token: empty token`,
		},
		{
			name:    "empty enrollment token",
			content: `{"agent_enrollment_tokens":[""]}`,
			want:    `agent_enrollment_tokens[0]: empty token`,
		},
		{
			name:    "short agent token",
			content: `{"agent_tokens":{"edge-1":"secret"}}`,
			want:    `agent_tokens["edge-1"]: token too short: want at least 43 base64url characters (32 random bytes)`,
		},
		{
			name:    "standard base64 characters",
			content: `{"agent_enrollment_tokens":["` + strings.Repeat("a+/", 15) + `"]}`,
			want:    `agent_enrollment_tokens[0]: token has a character outside the base64url alphabet (A-Z a-z 0-9 - _)`,
		},
		{
			name:    "duplicate token across kinds",
			content: `{"agent_enrollment_tokens":["` + tokA + `"],"operators":[{"name":"alice","role":"admin","token":"` + tokA + `"}]}`,
			want:    `operators[0].token: same token as agent_enrollment_tokens[0]: every token must be unique`,
		},
		{
			name:    "duplicate token between agents",
			content: `{"agent_tokens":{"a":"` + tokB + `","b":"` + tokB + `"}}`,
			want:    `agent_tokens["b"]: same token as agent_tokens["a"]: every token must be unique`,
		},
		{
			name:    "empty agent id",
			content: `{"agent_tokens":{"":"` + tokA + `"}}`,
			want:    `agent_tokens[""]: empty agent id`,
		},
		{
			name: "duplicate and empty operator names",
			content: `{"operators":[{"name":"alice","role":"admin","token":"` + tokA + `"},` +
				`{"name":"alice","role":"viewer","token":"` + tokB + `"},{"name":"","role":"viewer","token":"` + tokC + `"}]}`,
			want: "operators[1].name: \"alice\" is already operators[0]\noperators[2].name: empty name",
		},
		{
			name:    "every error at once",
			content: `{"agent_enrollment_tokens":[""],"operators":[{"name":"bob","role":"owner","token":"x"}]}`,
			want: "agent_enrollment_tokens[0]: empty token\n" +
				`operators[0].role: unknown role "owner" (want "viewer" or "admin")` + "\n" +
				"operators[0].token: token too short: want at least 43 base64url characters (32 random bytes)",
		},
		{
			name:    "no tokens",
			content: `{}`,
			want:    "no tokens: define agent_enrollment_tokens, agent_tokens or operators",
		},
		{
			name:    "unknown field",
			content: `{"agent_token":["` + tokA + `"]}`,
			want:    `decode: json: unknown field "agent_token"`,
		},
		{
			name:    "not JSON",
			content: `agent_enrollment_tokens: [x]`,
			want:    "decode: invalid character 'a' looking for beginning of value",
		},
		{
			name:    "trailing data",
			content: `{"agent_enrollment_tokens":["` + tokA + `"]} {}`,
			want:    "decode: unexpected data after the JSON object",
		},
		{
			name:    "readable by others",
			content: `{"agent_enrollment_tokens":["` + tokA + `"]}`,
			mode:    0o644,
			want:    "mode 0644 lets other users access secrets: chmod 600 it",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mode := c.mode
			if mode == 0 {
				mode = 0o600
			}
			path := writeFile(t, c.content, mode)
			tokens, err := LoadTokens(path)
			if err == nil {
				t.Fatalf("LoadTokens = %v, nil; want error", tokens)
			}
			if want := "tokens file " + path + ": " + c.want; err.Error() != want {
				t.Fatalf("error:\n%s\nwant:\n%s", err, want)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := LoadTokens(filepath.Join(t.TempDir(), "nope.json"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("error %v, want fs.ErrNotExist", err)
		}
	})
}

func TestLoadTokensIdentities(t *testing.T) {
	path := writeFile(t, `{
	  "agent_enrollment_tokens": ["`+tokA+`"],
	  "agent_tokens": {"edge-1": "`+tokB+`"},
	  "operators": [{"name": "grafana", "role": "viewer", "token": "`+tokC+`"}]
	}`, 0o600)
	tokens, err := LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		token string
		want  Identity
		ok    bool
	}{
		{token: tokA, want: Identity{Agent: true}, ok: true},
		{token: tokB, want: Identity{Agent: true, AgentID: "edge-1"}, ok: true},
		{token: tokC, want: Identity{Operator: "grafana", Role: RoleViewer}, ok: true},
		{token: strings.Repeat("D", 43)},
		{token: ""},
		{token: tokA[:42]},
	}
	for _, c := range cases {
		got, ok := tokens.lookup(c.token)
		if got != c.want || ok != c.ok {
			t.Errorf("lookup(%.4s…) = %v, %v; want %v, %v", c.token, got, ok, c.want, c.ok)
		}
	}
	if got := tokens.EnrollmentToken(); got != tokA {
		t.Errorf("EnrollmentToken() = %.4s…, want %.4s…", got, tokA)
	}
}

func TestGenerateTokens(t *testing.T) {
	g := GenerateTokens()
	f := g.file
	if len(f.AgentEnrollmentTokens) != 1 || len(f.AgentTokens) != 0 || len(f.Operators) != 2 {
		t.Fatalf("generated %d enrollment, %d agent tokens and %d operators; want 1, 0, 2",
			len(f.AgentEnrollmentTokens), len(f.AgentTokens), len(f.Operators))
	}
	if f.Operators[0].Name != "admin" || f.Operators[0].Role != RoleAdmin ||
		f.Operators[1].Name != "viewer" || f.Operators[1].Role != RoleViewer {
		t.Errorf("operators = %s/%s, %s/%s; want admin/admin, viewer/viewer",
			f.Operators[0].Name, f.Operators[0].Role, f.Operators[1].Name, f.Operators[1].Role)
	}
	seen := map[string]bool{}
	all := []string{f.AgentEnrollmentTokens[0], f.Operators[0].Token, f.Operators[1].Token}
	all = append(all, GenerateTokens().EnrollmentToken())
	for i, tok := range all {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(raw) != 32 {
			t.Errorf("token %d: %d bytes, err %v; want 32 bytes of base64url", i, len(raw), err)
		}
		if seen[tok] {
			t.Errorf("token %d repeats an earlier one", i)
		}
		seen[tok] = true
	}
}

func TestSaveAndEnsureTokens(t *testing.T) {
	mode := func(path string) os.FileMode {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}

	t.Run("save replaces a loose file with a 0600 one", func(t *testing.T) {
		path := writeFile(t, "old", 0o644)
		g := GenerateTokens()
		if err := g.Save(path); err != nil {
			t.Fatal(err)
		}
		if m := mode(path); m != 0o600 {
			t.Errorf("mode %04o, want 0600", m)
		}
		loaded, err := LoadTokens(path)
		if err != nil {
			t.Fatal(err)
		}
		if loaded.EnrollmentToken() != g.EnrollmentToken() {
			t.Error("loaded enrollment token differs from the saved one")
		}
		if id, ok := loaded.lookup(g.file.Operators[0].Token); !ok || id != (Identity{Operator: "admin", Role: RoleAdmin}) {
			t.Errorf("admin token loads as %v, %v", id, ok)
		}
		entries, err := os.ReadDir(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 {
			t.Errorf("directory holds %d files after Save, want 1 (no temporary left)", len(entries))
		}
	})

	t.Run("ensure creates, then loads", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		path := filepath.Join(dir, "tokens.json")
		first, created, err := EnsureTokens(path)
		if err != nil || !created {
			t.Fatalf("first EnsureTokens: created %v, err %v; want true, nil", created, err)
		}
		if m := mode(path); m != 0o600 {
			t.Errorf("tokens file mode %04o, want 0600", m)
		}
		if m := mode(dir); m != 0o700 {
			t.Errorf("tokens dir mode %04o, want 0700", m)
		}
		second, created, err := EnsureTokens(path)
		if err != nil || created {
			t.Fatalf("second EnsureTokens: created %v, err %v; want false, nil", created, err)
		}
		if second.EnrollmentToken() != first.EnrollmentToken() {
			t.Error("second EnsureTokens generated new tokens instead of loading")
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 {
			t.Errorf("directory holds %d files, want 1 (no temporary left)", len(entries))
		}
	})

	t.Run("ensure does not overwrite a bad file", func(t *testing.T) {
		path := writeFile(t, `{}`, 0o600)
		if _, _, err := EnsureTokens(path); err == nil {
			t.Fatal("EnsureTokens on an invalid file: nil error")
		}
		data, err := os.ReadFile(path)
		if err != nil || string(data) != `{}` {
			t.Errorf("file now holds %q (err %v), want it untouched", data, err)
		}
	})
}
