// Package durhist is the fixed log-scale histogram of call durations kept
// in the per-minute rollups (migration 0011, table http_calls_1m): the
// bucket bounds, the packed form of a histogram entry, and percentile
// estimates with a bounded relative error.
//
// Buckets are of whole microseconds. Bucket 0 holds durations below 1 µs
// (0, or negative after a clock step); bucket i ≥ 1 holds [Lower(i),
// Lower(i+1)), where Lower(1) = 1 and Lower(i+1) = Lower(i) + max(1,
// Lower(i)/K). Below 2K µs every bucket is one microsecond wide (exact);
// above, each is at most 1/K of its lower bound wide. The last bucket,
// from Lower(Buckets-1) ≈ 2^42 µs (51 days), is open.
//
// An estimate uses each bucket's representative value 2·lo·hi/(lo+hi),
// lo and hi its smallest and largest microsecond, which is within
// (hi−lo)/(hi+lo) < 1/(2K+1) of every value of the bucket. Percentiles
// interpolate between the estimates of the two ranks around p·(n−1), as
// PostgreSQL's percentile_cont interpolates between the values, so an
// estimated percentile is within MaxRelativeError of percentile_cont over
// the same durations (for durations of at least 1 µs below the last
// bucket).
//
// The same bounds are in the table http_duration_buckets (migration 0011);
// tests check that both agree.
package durhist

import (
	"math"
	"slices"
	"sort"
)

// K sets the bucket width: at most 1/K of the bucket's lower bound.
const K = 16

// MaxRelativeError bounds the relative error of every estimate:
// 1/(2K+1) ≈ 3.03%.
const MaxRelativeError = 1.0 / (2*K + 1)

// lastLower is where the open last bucket starts (at least).
const lastLower = int64(1) << 42

// lower[i] is the smallest duration (µs) of bucket i+1.
var lower = func() []int64 {
	var l []int64
	for b := int64(1); ; b += max(1, b/K) {
		l = append(l, b)
		if b >= lastLower {
			return l
		}
	}
}()

// Buckets is the number of buckets, bucket 0 included.
var Buckets = len(lower) + 1

// Lower returns the smallest duration (µs) of bucket b ≥ 1.
func Lower(b int) int64 { return lower[b-1] }

// Bucket returns the bucket of a duration in microseconds, as
// PostgreSQL's width_bucket(us, <the lower bounds of buckets 1…>) does.
func Bucket(us int64) int {
	return sort.Search(len(lower), func(i int) bool { return lower[i] > us })
}

// Representative returns the estimate (µs) of every duration of bucket b.
func Representative(b int) float64 {
	if b <= 0 {
		return 0
	}
	lo := float64(lower[b-1])
	if b >= len(lower) {
		return lo
	}
	hi := float64(lower[b] - 1)
	return 2 * lo * hi / (lo + hi)
}

// MaxCount is the largest count of one packed entry.
const MaxCount = 1<<countBits - 1

const countBits = 21

// Entry packs count (1 … MaxCount) durations of bucket b: b·2²¹ + count,
// an element of a histogram array (http_calls_1m.duration_histogram, an
// integer[]). A histogram is a multiset of entries: a bucket may appear in
// several, in any order.
func Entry(b int, count int64) int32 { return int32(b)<<countBits | int32(count) }

// Unpack returns the bucket and count of an entry.
func Unpack(e int32) (b int, count int64) { return int(e >> countBits), int64(e & MaxCount) }

// Histogram counts durations by bucket. The zero value is empty.
type Histogram struct {
	counts map[int]int64
	n      int64
}

// Add counts one duration in microseconds.
func (h *Histogram) Add(us int64) { h.AddBucket(Bucket(us), 1) }

// AddBucket counts n durations of bucket b.
func (h *Histogram) AddBucket(b int, n int64) {
	if n <= 0 {
		return
	}
	if h.counts == nil {
		h.counts = make(map[int]int64)
	}
	h.counts[b] += n
	h.n += n
}

// AddEntries counts packed entries, in any order, a bucket possibly in
// several entries.
func (h *Histogram) AddEntries(entries []int32) {
	for _, e := range entries {
		b, n := Unpack(e)
		h.AddBucket(b, n)
	}
}

// Count is the number of durations counted.
func (h *Histogram) Count() int64 { return h.n }

// AppendEntries appends the histogram's packed entries, by bucket, to dst
// (a count above MaxCount takes several entries).
func (h *Histogram) AppendEntries(dst []int32) []int32 {
	start := len(dst)
	for b, n := range h.counts {
		for ; n > MaxCount; n -= MaxCount {
			dst = append(dst, Entry(b, MaxCount))
		}
		dst = append(dst, Entry(b, n))
	}
	slices.Sort(dst[start:])
	return dst
}

// Percentiles estimates the percentiles ps (each in [0, 1]) of the durations of
// entries, in milliseconds, as percentile_cont(p) over duration_us / 1000.0
// would give them within MaxRelativeError. ok is false when entries count
// no duration (percentile_cont gives NULL).
func Percentiles(entries []int32, ps []float64) (ms []float64, ok bool) {
	type bucket struct {
		b   int
		cum int64 // durations in this bucket and below
	}
	var buckets []bucket
	if !slices.IsSortedFunc(entries, func(a, b int32) int { return int(a>>countBits) - int(b>>countBits) }) {
		entries = slices.Clone(entries)
		slices.Sort(entries)
	}
	var n int64
	for _, e := range entries {
		b, c := Unpack(e)
		n += c
		if len(buckets) > 0 && buckets[len(buckets)-1].b == b {
			buckets[len(buckets)-1].cum = n
		} else {
			buckets = append(buckets, bucket{b, n})
		}
	}
	if n == 0 {
		return nil, false
	}
	// rank returns the estimate of the value of 0-based rank r.
	rank := func(r int64) float64 {
		i := sort.Search(len(buckets), func(i int) bool { return buckets[i].cum > r })
		return Representative(buckets[i].b)
	}
	ms = make([]float64, len(ps))
	for i, p := range ps {
		pos := p * float64(n-1)
		k := int64(math.Floor(pos))
		v := rank(k)
		if f := pos - float64(k); f > 0 && k+1 < n {
			v += f * (rank(k+1) - v)
		}
		ms[i] = v / 1000
	}
	return ms, true
}
