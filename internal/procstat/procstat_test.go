package procstat

import (
	"math"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"
)

func TestSampleCPU(t *testing.T) {
	s := NewSampler()
	if _, err := s.Sample(); err != nil { // start a fresh interval
		t.Fatal(err)
	}
	var stop atomic.Bool
	done := make(chan uint64)
	go func() {
		var x uint64
		for !stop.Load() {
			for i := 0; i < 1000; i++ {
				x = x*6364136223846793005 + 1442695040888963407
			}
		}
		done <- x
	}()
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	<-done
	got, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if got.CPUPercent <= 0 {
		t.Errorf("CPUPercent = %v after burning CPU for 200ms, want > 0", got.CPUPercent)
	}
	if got.CPUTime <= 0 {
		t.Errorf("CPUTime = %v, want > 0", got.CPUTime)
	}
	if got.Time.IsZero() {
		t.Error("Time is zero")
	}
}

var sink []byte

func TestSampleRSSGrows(t *testing.T) {
	// Return freed heap to the OS first, so the allocation below cannot
	// reuse pages that are still resident (e.g. with -count=N).
	debug.FreeOSMemory()
	s := NewSampler()
	before, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if before.RSSBytes == 0 {
		t.Fatal("RSSBytes = 0")
	}
	const size = 64 << 20
	sink = make([]byte, size)
	for i := 0; i < len(sink); i += 4096 { // touch every page
		sink[i] = 1
	}
	after, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(sink)
	sink = nil
	// Allow some slack: a few pages may already have been resident.
	if after.RSSBytes < before.RSSBytes+size*3/4 {
		t.Errorf("RSS %d -> %d after touching 64 MiB, want growth >= 48 MiB", before.RSSBytes, after.RSSBytes)
	}
}

func TestParseStatmResident(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{name: "typical", in: "296946 4630 2560 506 0 29856 0\n", want: 4630},
		{name: "two fields", in: "1 2", want: 2},
		{name: "one field", in: "12345", wantErr: true},
		{name: "not a number", in: "1 x 3", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatmResident([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestRate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		total uint64
		at    time.Duration // after t0
		want  float64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "first update is zero", steps: []step{{100, 0, 0}}},
		{name: "steady", steps: []step{{0, 0, 0}, {100, time.Second, 100}, {400, 3 * time.Second, 150}}},
		{name: "sub-second", steps: []step{{10, 0, 0}, {15, 250 * time.Millisecond, 20}}},
		{name: "no change", steps: []step{{7, 0, 0}, {7, time.Second, 0}}},
		{name: "counter reset rebases", steps: []step{{500, 0, 0}, {20, time.Second, 0}, {120, 2 * time.Second, 100}}},
		{name: "same time ignored", steps: []step{{0, 0, 0}, {50, 0, 0}, {100, 2 * time.Second, 50}}},
		{name: "time backwards ignored", steps: []step{{0, time.Second, 0}, {50, 0, 0}, {100, 3 * time.Second, 50}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Rate
			for i, s := range tt.steps {
				if got := r.Update(s.total, t0.Add(s.at)); math.Abs(got-s.want) > 1e-9 {
					t.Errorf("step %d: Update(%d, +%v) = %v, want %v", i, s.total, s.at, got, s.want)
				}
			}
		})
	}
}

func BenchmarkSample(b *testing.B) {
	s := NewSampler()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sample(); err != nil {
			b.Fatal(err)
		}
	}
}
