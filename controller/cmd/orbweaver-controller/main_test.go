package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// A data directory the controller creates is traversable (0755) even when
// the token file, which it creates first, goes in it: the embedded
// database in it runs as the postgres user when the controller runs as
// root. The token file itself is private.
func TestDataDirCreatedTraversable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fresh")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--data-dir", dir, "--print-token", "admin"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !regexp.MustCompile(`^\S{20,}\n$`).MatchString(stdout.String()) {
		t.Errorf("printed %q, want one token", stdout.String())
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("data dir mode %v, want 0755", fi.Mode().Perm())
	}
	fi, err = os.Stat(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("tokens.json mode %v, want 0600", fi.Mode().Perm())
	}
}
