// Package auth authenticates and authorizes the controller's gRPC API.
//
// Agents present an agent token (an enrollment token shared by new agents,
// or a per-agent token bound to one agent id); operators present an operator
// token with a role: RoleViewer may call the ControlService's List* and Get*
// methods, RoleAdmin may call every ControlService method. Tokens travel in
// the "authorization: Bearer <token>" metadata. Server reflection and
// grpc.health.v1 are open; any other service is denied.
//
// Tokens live in a JSON file readable only by its owner (0600):
//
//	{
//	  "agent_enrollment_tokens": ["..."],
//	  "agent_tokens": {"<agent-id>": "..."},
//	  "operators": [{"name": "alice", "role": "admin", "token": "..."}]
//	}
//
// The package also builds TLS credentials for the server (optionally
// verifying client certificates) and for clients, and writes a throwaway CA
// and certificates for tests and development.
package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Role is what an operator token may do.
type Role string

const (
	// RoleViewer may call the read methods (List*, Get*) of ControlService.
	RoleViewer Role = "viewer"
	// RoleAdmin may call every ControlService method.
	RoleAdmin Role = "admin"
)

// allows reports whether r is at least need.
func (r Role) allows(need Role) bool {
	switch r {
	case RoleAdmin:
		return true
	case RoleViewer:
		return need == RoleViewer
	}
	return false
}

// tokenBytes is the entropy of a generated token; minTokenLen is the length
// of its unpadded base64url text, the shortest token a file may hold.
const (
	tokenBytes  = 32
	minTokenLen = 43
)

// Tokens is a verified set of agent and operator tokens. Build it with
// LoadTokens, GenerateTokens or EnsureTokens; it is immutable and safe for
// concurrent use. A nil or zero Tokens accepts no token.
type Tokens struct {
	file tokenFile
	// entries hold SHA-256 digests of the tokens: verification compares
	// digests in constant time against every entry.
	entries []entry
	// boundAgents are the agent ids that have their own token; the
	// enrollment token may not be used for them.
	boundAgents map[string]bool
}

type entry struct {
	sum [sha256.Size]byte
	id  Identity
}

// tokenFile is the on-disk form.
type tokenFile struct {
	AgentEnrollmentTokens []string          `json:"agent_enrollment_tokens,omitempty"`
	AgentTokens           map[string]string `json:"agent_tokens,omitempty"`
	Operators             []operatorToken   `json:"operators,omitempty"`
}

type operatorToken struct {
	Name  string `json:"name"`
	Role  Role   `json:"role"`
	Token string `json:"token"`
}

// LoadTokens reads and validates a token file. The file must not be
// readable or writable by group or others. Every invalid field is reported,
// named by its path (e.g. `operators[1].role: unknown role "root"`).
func LoadTokens(path string) (*Tokens, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("tokens file %s: mode %04o lets other users access secrets: chmod 600 it", path, perm)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	var f tokenFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("tokens file %s: decode: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("tokens file %s: decode: unexpected data after the JSON object", path)
	}
	t, err := newTokens(f)
	if err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return t, nil
}

// newTokens validates f and indexes its tokens. All field errors are joined.
func newTokens(f tokenFile) (*Tokens, error) {
	t := &Tokens{file: f, boundAgents: map[string]bool{}}
	var errs []error
	seen := map[string]string{} // token -> field path of its first use
	add := func(field, token string, id Identity) {
		if err := checkToken(token); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			return
		}
		if first, dup := seen[token]; dup {
			errs = append(errs, fmt.Errorf("%s: same token as %s: every token must be unique", field, first))
			return
		}
		seen[token] = field
		t.entries = append(t.entries, entry{sum: sha256.Sum256([]byte(token)), id: id})
	}
	for i, tok := range f.AgentEnrollmentTokens {
		add(fmt.Sprintf("agent_enrollment_tokens[%d]", i), tok, Identity{Agent: true})
	}
	ids := make([]string, 0, len(f.AgentTokens))
	for id := range f.AgentTokens {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		field := fmt.Sprintf("agent_tokens[%q]", id)
		if strings.TrimSpace(id) == "" {
			errs = append(errs, fmt.Errorf("%s: empty agent id", field))
			continue
		}
		t.boundAgents[id] = true
		add(field, f.AgentTokens[id], Identity{Agent: true, AgentID: id})
	}
	names := map[string]int{}
	for i, op := range f.Operators {
		field := fmt.Sprintf("operators[%d]", i)
		switch {
		case strings.TrimSpace(op.Name) == "":
			errs = append(errs, fmt.Errorf("%s.name: empty name", field))
		default:
			if j, dup := names[op.Name]; dup {
				errs = append(errs, fmt.Errorf("%s.name: %q is already operators[%d]", field, op.Name, j))
			} else {
				names[op.Name] = i
			}
		}
		if op.Role != RoleViewer && op.Role != RoleAdmin {
			errs = append(errs, fmt.Errorf("%s.role: unknown role %q (want %q or %q)", field, op.Role, RoleViewer, RoleAdmin))
		}
		add(field+".token", op.Token, Identity{Operator: op.Name, Role: op.Role})
	}
	if len(errs) == 0 && len(t.entries) == 0 {
		errs = append(errs, errors.New("no tokens: define agent_enrollment_tokens, agent_tokens or operators"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// checkToken rejects tokens that are empty, short or not base64url text.
func checkToken(tok string) error {
	if tok == "" {
		return errors.New("empty token")
	}
	if len(tok) < minTokenLen {
		return fmt.Errorf("token too short: want at least %d base64url characters (%d random bytes)", minTokenLen, tokenBytes)
	}
	for _, c := range tok {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return errors.New("token has a character outside the base64url alphabet (A-Z a-z 0-9 - _)")
		}
	}
	return nil
}

// GenerateTokens returns fresh tokens: one agent enrollment token, an
// operator "admin" with RoleAdmin and an operator "viewer" with RoleViewer.
// Each token is 32 random bytes in unpadded base64url.
func GenerateTokens() *Tokens {
	t, err := newTokens(tokenFile{
		AgentEnrollmentTokens: []string{newToken()},
		Operators: []operatorToken{
			{Name: "admin", Role: RoleAdmin, Token: newToken()},
			{Name: "viewer", Role: RoleViewer, Token: newToken()},
		},
	})
	if err != nil {
		panic("auth: generated tokens are invalid: " + err.Error()) // unreachable
	}
	return t
}

func newToken() string {
	b := make([]byte, tokenBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// EnrollmentToken returns the first agent enrollment token, or "" when
// there is none. It is for starting a local agent (demo, tests); never log it.
func (t *Tokens) EnrollmentToken() string {
	if t == nil || len(t.file.AgentEnrollmentTokens) == 0 {
		return ""
	}
	return t.file.AgentEnrollmentTokens[0]
}

// OperatorToken returns the token of the named operator, for printing it
// to its owner (orbweaver-controller --print-token); never log it.
func (t *Tokens) OperatorToken(name string) (string, bool) {
	if t == nil {
		return "", false
	}
	for _, o := range t.file.Operators {
		if o.Name == name {
			return o.Token, true
		}
	}
	return "", false
}

// Save writes the tokens to path with mode 0600, atomically replacing any
// existing file.
func (t *Tokens) Save(path string) error {
	tmp, err := t.writeTemp(path)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("save tokens: %w", err)
	}
	return nil
}

// EnsureTokens loads the token file at path, or, when it does not exist,
// generates tokens (see GenerateTokens) and saves them there, creating the
// parent directory (0700) if needed; created reports the latter. It never
// overwrites an existing file, even one created concurrently.
func EnsureTokens(path string) (t *Tokens, created bool, err error) {
	t, err = LoadTokens(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return t, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create tokens dir: %w", err)
	}
	t = GenerateTokens()
	tmp, err := t.writeTemp(path)
	if err != nil {
		return nil, false, err
	}
	defer os.Remove(tmp)
	// A hard link publishes the complete file and fails if path exists.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			t, err = LoadTokens(path)
			return t, false, err
		}
		return nil, false, fmt.Errorf("save tokens: %w", err)
	}
	return t, true, nil
}

// writeTemp writes the file's content to a new 0600 file next to path and
// returns its name.
func (t *Tokens) writeTemp(path string) (string, error) {
	data, err := json.MarshalIndent(t.file, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode tokens: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", fmt.Errorf("save tokens: %w", err)
	}
	name := f.Name()
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(append(data, '\n'))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name)
		return "", fmt.Errorf("save tokens: %w", err)
	}
	return name, nil
}

// lookup returns the identity holding token. It hashes the token and
// compares the digest with every entry in constant time.
func (t *Tokens) lookup(token string) (Identity, bool) {
	if t == nil {
		return Identity{}, false
	}
	sum := sha256.Sum256([]byte(token))
	var found Identity
	ok := false
	for _, e := range t.entries {
		if subtle.ConstantTimeCompare(sum[:], e.sum[:]) == 1 {
			found, ok = e.id, true
		}
	}
	return found, ok
}
