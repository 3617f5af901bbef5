package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestIdentityIsStableAcrossRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	id, err := loadOrCreateID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("id %q is not a UUID", id)
	}
	again, err := loadOrCreateID(dir)
	if err != nil || again != id {
		t.Fatalf("second load = %q, %v; want %q", again, err, id)
	}
	a, err := New(Config{Controller: "127.0.0.1:1", StateDir: dir})
	if err != nil || a.ID() != id {
		t.Fatalf("New: id %q err %v; want %q", a.ID(), err, id)
	}
	b, _ := New(Config{Controller: "127.0.0.1:1", StateDir: dir})
	if a.bootID == b.bootID {
		t.Fatal("two starts share a boot id")
	}
}

func TestIdentityRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, idFile), []byte("not-a-uuid\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadOrCreateID(dir)
	if err == nil || !strings.Contains(err.Error(), `holds "not-a-uuid", not a UUID`) {
		t.Fatalf("err = %v", err)
	}
}
