package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/orbweaver/orbweaver/internal/pcapgen"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.pcap")
	tests := []struct {
		name      string
		args      []string
		wantErr   bool
		wantTruth int // exchanges in OUT.truth.json; -1: no file
	}{
		{"no output", []string{"-conns", "1"}, true, -1},
		{"bad flag", []string{"-out", out, "-nope"}, true, -1},
		{"pcap only", []string{"-out", out, "-conns", "3", "-exchanges", "2"}, false, -1},
		{"with truth", []string{"-out", out, "-conns", "4", "-exchanges", "3", "-impair", "0.1", "-truth"}, false, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(out)
			os.Remove(out + ".truth.json")
			err := run(tt.args, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("run: %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if st, err := os.Stat(out); err != nil || st.Size() <= 24 {
				t.Fatalf("pcap: %v", err)
			}
			js, err := os.ReadFile(out + ".truth.json")
			if tt.wantTruth < 0 {
				if err == nil {
					t.Error("truth written without -truth")
				}
				return
			}
			var truth []pcapgen.Truth
			if err != nil || json.Unmarshal(js, &truth) != nil || len(truth) != tt.wantTruth {
				t.Errorf("truth: %v, %d exchanges, want %d", err, len(truth), tt.wantTruth)
			}
		})
	}
}

func TestRunFixtures(t *testing.T) {
	dir := t.TempDir()
	if err := run([]string{"-fixtures", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, f := range pcapgen.Fixtures() {
		for _, ext := range []string{".pcap", ".truth.json"} {
			if _, err := os.Stat(filepath.Join(dir, f.Name+ext)); err != nil {
				t.Error(err)
			}
		}
	}
}
