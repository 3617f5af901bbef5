package pcapgen

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestGenerateHTTP checks the volume generator: counts, determinism, time
// order, and that net/http parses exactly the truth out of every stream.
func TestGenerateHTTP(t *testing.T) {
	tests := []struct {
		name string
		spec VolumeSpec
	}{
		{"defaults", VolumeSpec{}},
		{"impaired", VolumeSpec{Connections: 30, ExchangesPerConn: 8, Concurrency: 10, Seed: 5, ImpairmentRate: 0.05}},
		{"ipv6 sequential", VolumeSpec{Connections: 5, ExchangesPerConn: 3, Concurrency: 1, Seed: 9, IPv6: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var truth []Truth
			spec := tt.spec
			spec.OnExchange = func(tr Truth) { truth = append(truth, tr) }
			var buf bytes.Buffer
			sum, err := GenerateHTTP(&buf, spec)
			if err != nil {
				t.Fatal(err)
			}
			d := spec.withDefaults()
			if sum.Exchanges != d.Connections*d.ExchangesPerConn || len(truth) != sum.Exchanges || sum.Connections != d.Connections {
				t.Errorf("summary %+v, %d truths; want %d connections x %d exchanges", sum, len(truth), d.Connections, d.ExchangesPerConn)
			}
			var again bytes.Buffer
			if _, err := GenerateHTTP(&again, tt.spec); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), again.Bytes()) {
				t.Error("same spec, different output")
			}
			pkts, err := readPcap(t, buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			var frameBytes int64
			for i, p := range pkts {
				frameBytes += int64(len(p.raw))
				if i > 0 && p.ts < pkts[i-1].ts {
					t.Fatalf("frame %d earlier than frame %d", i+1, i)
				}
			}
			if int64(len(pkts)) != sum.Packets || frameBytes != sum.Bytes {
				t.Errorf("read %d frames / %d bytes, summary says %d / %d", len(pkts), frameBytes, sum.Packets, sum.Bytes)
			}
			if pkts[0].ts != sum.First.UnixNano() || pkts[len(pkts)-1].ts != sum.Last.UnixNano() {
				t.Errorf("summary span %v..%v does not match frames", sum.First, sum.Last)
			}
			checkAgainstTruth(t, pkts, truth)
			var reorder, retrans int
			for _, s := range reassemble(t, pkts) {
				reorder += s.reorder
				retrans += s.retrans
			}
			if impaired := spec.ImpairmentRate > 0; impaired != (reorder > 0) || impaired != (retrans > 0) {
				t.Errorf("impairment %v: %d reordered, %d retransmitted segments", spec.ImpairmentRate, reorder, retrans)
			}
		})
	}
}

// TestGenerateHTTPMatchesTshark dissects a small impaired volume capture
// with tshark and compares every exchange with the truth.
func TestGenerateHTTPMatchesTshark(t *testing.T) {
	bin := findTshark(t)
	var truth []Truth
	spec := VolumeSpec{Connections: 40, ExchangesPerConn: 5, Concurrency: 16, Seed: 11, ImpairmentRate: 0.03,
		OnExchange: func(tr Truth) { truth = append(truth, tr) }}
	var buf bytes.Buffer
	if _, err := GenerateHTTP(&buf, spec); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "volume.pcap")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := tsharkExchanges(t, bin, tsharkArgs(file, []int{80, 8080}))
	if err != nil {
		t.Fatal(err)
	}
	compareTshark(t, got, truth, true)
	t.Logf("tshark: %d exchanges, truth: %d", len(got), len(truth))
}

// BenchmarkGenerateHTTP measures the volume generator (about 16 frames per
// exchange; reports packets/s).
func BenchmarkGenerateHTTP(b *testing.B) {
	var packets int64
	for i := range b.N {
		sum, err := GenerateHTTP(discard{}, VolumeSpec{Connections: 200, ExchangesPerConn: 20, Seed: int64(i), ImpairmentRate: 0.01})
		if err != nil {
			b.Fatal(err)
		}
		packets += sum.Packets
	}
	b.ReportMetric(float64(packets)/b.Elapsed().Seconds(), "packets/s")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
