package pcapgen

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the fixtures in testdata/pcaps")

// fixtureDir is testdata/pcaps at the repository root.
var fixtureDir = filepath.Join("..", "..", "testdata", "pcaps")

// TestFixturesUpToDate regenerates every fixture in memory and compares it
// byte for byte with testdata/pcaps (run with -update to rewrite them).
func TestFixturesUpToDate(t *testing.T) {
	if *update {
		if err := WriteFixtures(fixtureDir); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range Fixtures() {
		t.Run(f.Name, func(t *testing.T) {
			pcap, truth, err := f.Build()
			if err != nil {
				t.Fatal(err)
			}
			js, err := MarshalTruth(truth)
			if err != nil {
				t.Fatal(err)
			}
			pcap2, _, err := f.Build()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pcap, pcap2) {
				t.Fatal("two builds differ: generation is not deterministic")
			}
			for name, want := range map[string][]byte{f.Name + ".pcap": pcap, f.Name + ".truth.json": js} {
				got, err := os.ReadFile(filepath.Join(fixtureDir, name))
				if err != nil {
					t.Fatalf("%v (regenerate: go generate ./internal/pcapgen)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s is stale (regenerate: go generate ./internal/pcapgen)", name)
				}
			}
		})
	}
}

// loadFixture reads a fixture and its truth from testdata/pcaps.
func loadFixture(t *testing.T, name string) ([]byte, []Truth) {
	t.Helper()
	pcap, err := os.ReadFile(filepath.Join(fixtureDir, name+".pcap"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(filepath.Join(fixtureDir, name+".truth.json"))
	if err != nil {
		t.Fatal(err)
	}
	var truth []Truth
	if err := json.Unmarshal(js, &truth); err != nil {
		t.Fatalf("%s.truth.json: %v", name, err)
	}
	return pcap, truth
}

// TestFixtureContents checks each fixture's size, exchange counts, and
// (where the streams are complete) that net/http parses exactly the truth
// out of the reassembled streams.
func TestFixtureContents(t *testing.T) {
	tests := []struct {
		name        string
		exchanges   int
		noResponse  int
		gaps        int  // exchanges flagged CaptureGap
		parse       bool // reassembled streams parse into the truth
		serverSkip  int  // leading server bytes that belong to no exchange
		wantReorder bool
	}{
		{name: "http_keepalive", exchanges: 30, parse: true},
		{name: "http_impaired", exchanges: 20, parse: true, wantReorder: true},
		{name: "http_chunked", exchanges: 6, parse: true},
		{name: "http_pipelined", exchanges: 6, parse: true},
		{name: "http_no_response", exchanges: 4, noResponse: 2, parse: true},
		{name: "http_midstream", exchanges: 5, parse: true, serverSkip: 2500},
		{name: "http_loss", exchanges: 4, gaps: 1},
		{name: "http_ipv6", exchanges: 10, parse: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pcap, truth := loadFixture(t, tt.name)
			if len(pcap) >= 200_000 {
				t.Errorf("%d bytes, want < 200 KB", len(pcap))
			}
			if len(truth) != tt.exchanges {
				t.Errorf("%d exchanges in truth, want %d", len(truth), tt.exchanges)
			}
			var noResp, gaps int
			for _, tr := range truth {
				if tr.Status == 0 {
					noResp++
				}
				if tr.CaptureGap {
					gaps++
				}
			}
			if noResp != tt.noResponse || gaps != tt.gaps {
				t.Errorf("%d without response, %d with gaps; want %d, %d", noResp, gaps, tt.noResponse, tt.gaps)
			}
			pkts, err := readPcap(t, pcap)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(pkts); i++ {
				if pkts[i].ts < pkts[i-1].ts {
					t.Fatalf("frame %d earlier than frame %d", i+1, i)
				}
			}
			streams := reassemble(t, pkts)
			if tt.serverSkip > 0 {
				// The capture starts inside a response that belongs to
				// no exchange of the truth: drop its bytes.
				tr := truth[0]
				f := flow{
					netip.AddrPortFrom(netip.MustParseAddr(tr.ServerIP), uint16(tr.ServerPort)),
					netip.AddrPortFrom(netip.MustParseAddr(tr.ClientIP), uint16(tr.ClientPort)),
				}
				streams[f].data = streams[f].data[tt.serverSkip:]
			}
			if tt.parse {
				checkStreams(t, streams, truth)
			}
			reorder := 0
			for _, s := range reassemble(t, pkts) {
				reorder += s.reorder
			}
			if (reorder > 0) != tt.wantReorder {
				t.Errorf("%d reordered segments", reorder)
			}
		})
	}
}

// TestTruncatedFixture checks that truncated.pcap is http_keepalive.pcap cut
// inside a record and that its truth lists exactly the exchanges complete
// before the cut.
func TestTruncatedFixture(t *testing.T) {
	full, fullTruth := loadFixture(t, "http_keepalive")
	cut, truth := loadFixture(t, "truncated")
	if !bytes.HasPrefix(full, cut) || len(cut) >= len(full) {
		t.Fatal("truncated.pcap is not a prefix of http_keepalive.pcap")
	}
	pkts, err := readPcap(t, cut)
	if err == nil {
		t.Fatal("reading truncated.pcap gave no error")
	}
	t.Logf("read %d frames, then: %v", len(pkts), err)
	recs, _ := pcapRecords(cut)
	last := recs[len(recs)-1]
	if last.offset+pcapRecordHeaderLen >= len(cut) || last.offset+pcapRecordHeaderLen+last.size <= len(cut) {
		t.Fatalf("cut is not inside the data of record %d", len(recs))
	}
	if len(pkts) != len(recs)-1 {
		t.Errorf("read %d frames, want the %d before the cut", len(pkts), len(recs)-1)
	}
	var want []Truth
	for _, tr := range fullTruth {
		if tr.ResponseEndTime.UnixNano() < last.ts {
			want = append(want, tr)
		}
	}
	if len(truth) == 0 || len(truth) >= len(fullTruth) || len(truth) != len(want) {
		t.Fatalf("truth has %d exchanges, %d complete before the cut, full capture %d", len(truth), len(want), len(fullTruth))
	}
	for i := range truth {
		if truth[i].RequestID != want[i].RequestID {
			t.Errorf("exchange %d: %s, want %s", i, truth[i].RequestID, want[i].RequestID)
		}
	}
}
