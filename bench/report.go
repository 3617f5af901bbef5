package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// sizes are the workload sizes of one -size.
type sizes struct {
	// decode: generated capture.
	DecodeConns, DecodeExchanges int
	Impairment                   float64
	// live: request rates (req/s), each held for LiveStep.
	LiveRates []int
	LiveStep  time.Duration
	// ingest: simulated agents, 1000-call batches each sends per run.
	IngestAgents, IngestBatches int
	// e2e: requests per run, at E2ERate req/s.
	E2ERequests, E2ERate int
	// queries: stored calls, repetitions of each query per run.
	QueryRows, QueryReps int
	// hostile: half-open streams and bytes of the endless chunked body.
	HostileStreams    int
	HostileChunkBytes int64
}

func sizesFor(name string) (sizes, bool) {
	switch name {
	case "smoke":
		return sizes{
			DecodeConns: 60, DecodeExchanges: 20, Impairment: 0.002,
			LiveRates: []int{500, 1000}, LiveStep: time.Second,
			IngestAgents: 2, IngestBatches: 4,
			E2ERequests: 40, E2ERate: 100,
			QueryRows: 20_000, QueryReps: 5,
			HostileStreams: 2000, HostileChunkBytes: 4 << 20,
		}, true
	case "full":
		return sizes{
			// ≈1.05M packets, ≈900 MB (see agent/pipeline BenchmarkPipelineFile1M).
			DecodeConns: 1000, DecodeExchanges: 65, Impairment: 0.002,
			LiveRates: []int{2000, 5000, 10000, 20000, 25000, 30000}, LiveStep: 4 * time.Second,
			IngestAgents: 4, IngestBatches: 100,
			E2ERequests: 500, E2ERate: 100,
			QueryRows: 10_000_000, QueryReps: 20,
			HostileStreams: 100_000, HostileChunkBytes: 512 << 20,
		}, true
	}
	return sizes{}, false
}

// target is a budget line of the issue: the value must be >= (AtLeast) or
// < (Below) Value.
type target struct {
	AtLeast bool    `json:"at_least"`
	Value   float64 `json:"value"`
}

func atLeast(v float64) *target { return &target{AtLeast: true, Value: v} }
func below(v float64) *target   { return &target{Value: v} }

func (t *target) String() string {
	if t == nil {
		return ""
	}
	if t.AtLeast {
		return "≥ " + fmtNum(t.Value)
	}
	return "< " + fmtNum(t.Value)
}

// Result is one figure of the table.
type Result struct {
	Section string    `json:"section"`
	Metric  string    `json:"metric"`
	Value   float64   `json:"value"` // median of Runs
	Unit    string    `json:"unit"`
	Runs    []float64 `json:"runs"`
	Target  *target   `json:"target,omitempty"`
	Status  string    `json:"status,omitempty"` // PASS or MISS when there is a target
	Miss    string    `json:"miss,omitempty"`   // by how much a target is missed
	Note    string    `json:"note,omitempty"`
}

// report collects results. It is used from one goroutine.
type report struct {
	Size      string            `json:"size"`
	Runs      int               `json:"runs"`
	Started   time.Time         `json:"started"`
	GoVersion string            `json:"go_version"`
	NumCPU    int               `json:"num_cpu"`
	Results   []Result          `json:"results"`
	Errors    map[string]string `json:"errors,omitempty"`
}

func newReport(cfg config) *report {
	return &report{Size: cfg.size, Runs: cfg.runs, Started: time.Now().UTC(), GoVersion: runtime.Version(), NumCPU: runtime.NumCPU()}
}

// add records a figure: the median of runs, checked against t when set.
func (r *report) add(section, metric, unit string, runs []float64, t *target, note string) {
	res := Result{Section: section, Metric: metric, Unit: unit, Runs: runs, Target: t, Note: note, Value: median(runs)}
	if t != nil && len(runs) > 0 {
		ok := res.Value >= t.Value
		if !t.AtLeast {
			ok = res.Value < t.Value
		}
		if ok {
			res.Status = "PASS"
		} else {
			res.Status = "MISS"
			d := math.Abs(res.Value - t.Value)
			pct := 100 * d / math.Max(math.Abs(t.Value), 1e-12)
			word := "short by"
			if !t.AtLeast {
				word = "over by"
			}
			res.Miss = fmt.Sprintf("%s %s %s (%.0f%%)", word, fmtNum(d), unit, pct)
			if d == 0 {
				res.Miss = "at the limit, must be below it"
			}
		}
	}
	if len(runs) == 0 {
		res.Value = math.NaN()
	}
	r.Results = append(r.Results, res)
}

func (r *report) fail(section string, err error) {
	if r.Errors == nil {
		r.Errors = map[string]string{}
	}
	r.Errors[section] = err.Error()
}

func (r *report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\nOrbweaver bench: size %s, %d run(s) per figure (median), %s, %d CPUs\n\n", r.Size, r.Runs, r.GoVersion, r.NumCPU)
	if r.Size != "full" {
		fmt.Fprintf(tw, "(size %s: tiny inputs to keep the command working; the targets are meant for -size full)\n\n", r.Size)
	}
	fmt.Fprintln(tw, "SECTION\tMETRIC\tVALUE\tUNIT\tTARGET\tSTATUS\tNOTE")
	for _, res := range r.Results {
		note := res.Note
		if res.Miss != "" {
			note = strings.TrimSpace(res.Miss + "; " + note)
			note = strings.TrimSuffix(note, ";")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", res.Section, res.Metric, fmtNum(res.Value), res.Unit, res.Target.String(), res.Status, note)
	}
	tw.Flush()
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "\nFAILED SECTIONS:")
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s: %s\n", k, r.Errors[k])
		}
	}
}

func (r *report) writeJSON(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("write json: %w", err)
		}
	}
	// NaN is not JSON: failed figures become null through a copy.
	type jsonResult struct {
		Result
		Value *float64 `json:"value"`
	}
	out := struct {
		*report
		Results []jsonResult `json:"results"`
	}{report: r}
	for _, res := range r.Results {
		jr := jsonResult{Result: res}
		if !math.IsNaN(res.Value) && !math.IsInf(res.Value, 0) {
			v := res.Value
			jr.Value = &v
		}
		jr.Runs = slices.DeleteFunc(slices.Clone(res.Runs), func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) })
		out.Results = append(out.Results, jr)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

// median of xs (NaN when empty).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile of durations (nearest rank), in milliseconds.
func percentileMs(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return math.NaN()
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i]) / float64(time.Millisecond)
}

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.1f", v)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
