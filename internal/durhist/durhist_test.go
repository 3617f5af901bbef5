package durhist

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

func TestBuckets(t *testing.T) {
	if Buckets >= 1<<(31-countBits) {
		t.Fatalf("%d buckets do not fit an entry", Buckets)
	}
	for _, tt := range []struct {
		us   int64
		want int
	}{{-5, 0}, {0, 0}, {1, 1}, {2, 2}, {31, 31}, {32, 32}, {33, 32}, {34, 33}} {
		if got := Bucket(tt.us); got != tt.want {
			t.Errorf("Bucket(%d) = %d, want %d", tt.us, got, tt.want)
		}
	}
	for b := 1; b < Buckets; b++ {
		lo := Lower(b)
		if Bucket(lo) != b || (b > 1 && Bucket(lo-1) != b-1) {
			t.Fatalf("bucket %d does not start at %d", b, lo)
		}
		if b+1 < Buckets {
			hi := Lower(b+1) - 1
			r := Representative(b)
			for _, v := range []int64{lo, hi} {
				if e := math.Abs(r-float64(v)) / float64(v); e > MaxRelativeError {
					t.Fatalf("bucket %d [%d, %d]: representative %g is %.4f off %d", b, lo, hi, r, e, v)
				}
			}
		}
	}
	t.Logf("%d buckets, last from %d µs, relative error < %.4f", Buckets, Lower(Buckets-1), MaxRelativeError)
}

// percentileCont is PostgreSQL's percentile_cont over sorted values.
func percentileCont(sorted []float64, p float64) float64 {
	pos := p * float64(len(sorted)-1)
	k := int(math.Floor(pos))
	v := sorted[k]
	if f := pos - float64(k); f > 0 && k+1 < len(sorted) {
		v += f * (sorted[k+1] - v)
	}
	return v
}

// TestPercentilesBound checks the documented bound on random samples of
// several shapes, with histograms split and shuffled as rollups store them.
func TestPercentilesBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ps := []float64{0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1}
	shapes := map[string]func() int64{
		"lognormal 15 ms":  func() int64 { return int64(math.Exp(rng.NormFloat64()*0.9+math.Log(15000))) + 1 },
		"uniform 1 µs–1 s": func() int64 { return 1 + rng.Int64N(1_000_000) },
		"tiny":             func() int64 { return rng.Int64N(40) + 1 },
		"bimodal":          func() int64 { return []int64{120, 3_000_000}[rng.IntN(2)] + rng.Int64N(50) },
		"hours":            func() int64 { return 3_600_000_000 + rng.Int64N(3_600_000_000) },
	}
	worst := 0.0
	for name, gen := range shapes {
		for _, n := range []int{1, 2, 3, 10, 137, 5000} {
			var us []int64
			for range n {
				us = append(us, gen())
			}
			// As stored: several histograms (batches), concatenated.
			var entries []int32
			for i := 0; i < n; i += 7 {
				var h Histogram
				for _, v := range us[i:min(i+7, n)] {
					h.Add(v)
				}
				entries = h.AppendEntries(entries)
			}
			rng.Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
			got, ok := Percentiles(entries, ps)
			if !ok {
				t.Fatalf("%s n=%d: no estimate", name, n)
			}
			ms := make([]float64, n)
			for i, v := range us {
				ms[i] = float64(v) / 1000
			}
			sort.Float64s(ms)
			for i, p := range ps {
				want := percentileCont(ms, p)
				e := math.Abs(got[i]-want) / want
				worst = max(worst, e)
				if e > MaxRelativeError {
					t.Errorf("%s n=%d p%g: %g ms, percentile_cont %g ms: %.4f off", name, n, p*100, got[i], want, e)
				}
			}
		}
	}
	t.Logf("worst relative error %.4f (bound %.4f)", worst, MaxRelativeError)
	if _, ok := Percentiles(nil, ps); ok {
		t.Error("estimate of no duration")
	}
}

func TestEntries(t *testing.T) {
	var h Histogram
	h.AddBucket(3, MaxCount+5)
	h.AddBucket(1, 2)
	got := h.AppendEntries(nil)
	want := []int32{Entry(1, 2), Entry(3, 5), Entry(3, MaxCount)}
	if !slices.Equal(got, want) {
		t.Fatalf("entries = %v, want %v", got, want)
	}
	var back Histogram
	back.AddEntries(got)
	if back.Count() != MaxCount+7 {
		t.Fatalf("count = %d", back.Count())
	}
	if b, n := Unpack(Entry(Buckets-1, MaxCount)); b != Buckets-1 || n != MaxCount {
		t.Fatalf("Unpack = %d, %d", b, n)
	}
}
