package pipeline

import (
	"os"
	"testing"
)

// TestDumpPcap prints the calls and stats of one capture, for debugging:
//
//	DUMP_PCAP=/path/to/file.pcap go test -run TestDumpPcap -v ./agent/pipeline/
func TestDumpPcap(t *testing.T) {
	path := os.Getenv("DUMP_PCAP")
	if path == "" {
		t.Skip("DUMP_PCAP not set")
	}
	calls, st := runPcap(t, path)
	for _, c := range calls {
		t.Logf("%+v", *c)
	}
	t.Logf("%+v", st)
}
