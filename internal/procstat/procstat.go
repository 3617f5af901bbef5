// Package procstat samples the current process's CPU use and resident
// memory, for the agent's heartbeat and self-monitoring, and turns
// cumulative counters into per-second rates.
//
// CPU time comes from getrusage(RUSAGE_SELF) and the resident set size from
// /proc/self/statm, so Sample fully works on Linux only: elsewhere it
// returns an error (after the CPU part on BSDs and macOS, at once on
// Windows). No cgo is used.
package procstat

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// statmPath is the file RSS is read from.
const statmPath = "/proc/self/statm"

// Sample is one measurement of the process.
type Sample struct {
	// CPUPercent is the average CPU use (user + system) since the previous
	// Sample (or since NewSampler for the first), in percent of one core:
	// 200 means two cores busy the whole interval.
	CPUPercent float64
	// CPUTime is the total CPU time (user + system) the process has used.
	CPUTime time.Duration
	// RSSBytes is the resident set size now.
	RSSBytes uint64
	// Time is when the sample was taken.
	Time time.Time
}

// Sampler measures the current process. It is safe for concurrent use;
// each call to Sample advances the interval CPUPercent averages over, so
// one Sampler should have one reader (e.g. the heartbeat loop).
type Sampler struct {
	mu       sync.Mutex
	lastCPU  time.Duration
	lastTime time.Time
	pageSize uint64
	buf      [128]byte // reused read buffer for statm
}

// NewSampler returns a Sampler whose first Sample averages CPU use from
// now.
func NewSampler() *Sampler {
	s := &Sampler{pageSize: uint64(os.Getpagesize())}
	if cpu, err := cpuTime(); err == nil {
		s.lastCPU = cpu
	}
	s.lastTime = time.Now()
	return s
}

// Sample measures the process. On error the returned Sample holds what
// could be measured; CPU use is still averaged from the previous call.
func (s *Sampler) Sample() (Sample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	now := time.Now()
	out := Sample{Time: now}
	cpu, err := cpuTime()
	if err != nil {
		return out, err
	}
	out.CPUTime = cpu
	if wall := now.Sub(s.lastTime); wall > 0 && cpu >= s.lastCPU {
		out.CPUPercent = 100 * float64(cpu-s.lastCPU) / float64(wall)
	}
	s.lastCPU, s.lastTime = cpu, now

	rss, err := s.rss()
	if err != nil {
		return out, err
	}
	out.RSSBytes = rss
	return out, nil
}

// rss reads the second field of /proc/self/statm (resident pages) into the
// reused buffer and multiplies it by the page size.
func (s *Sampler) rss() (uint64, error) {
	f, err := os.Open(statmPath)
	if err != nil {
		return 0, fmt.Errorf("read rss: %w", err)
	}
	defer f.Close()
	n, err := f.Read(s.buf[:])
	if err != nil {
		return 0, fmt.Errorf("read rss: %w", err)
	}
	pages, err := parseStatmResident(s.buf[:n])
	if err != nil {
		return 0, fmt.Errorf("read rss: %w", err)
	}
	return pages * s.pageSize, nil
}

// parseStatmResident returns the second space-separated decimal field of
// a statm line ("size resident shared text lib data dt").
func parseStatmResident(b []byte) (uint64, error) {
	i := 0
	for i < len(b) && b[i] != ' ' { // skip size
		i++
	}
	if i == len(b) {
		return 0, fmt.Errorf("statm %q: no resident field", b)
	}
	i++
	var v uint64
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		v = v*10 + uint64(b[i]-'0')
	}
	if i == start {
		return 0, fmt.Errorf("statm %q: resident field not a number", b)
	}
	return v, nil
}
