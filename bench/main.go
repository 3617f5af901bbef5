// Command bench measures Orbweaver against the performance budget of issue 6
// and prints a table of the figures next to their targets (PASS/MISS), also
// written as JSON.
//
//	go run ./bench                      # smoke size, every section
//	go run ./bench -size full -runs 3   # the sizes
//	go run ./bench -only decode,ingest -cpuprofile cpu.pprof
//
// Sections: decode (agent pipeline on a generated capture vs a naive
// gopacket+net/http baseline and tshark), live (agent subprocess capturing
// lo at increasing request rates), ingest (simulated agents over gRPC into
// the controller vs a raw pgx CopyFrom loop), e2e (response written →
// row queryable), queries (the Grafana plugin's queries on generated calls),
// hostile (half-open streams and an endless chunked response through the
// pipeline, in a child process). Each figure is the median of -runs runs;
// ratios are computed per run on the same input, then their median taken.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
)

// sectionNames returns the sections in the order they run.
func sectionNames() []string {
	return []string{"decode", "live", "ingest", "e2e", "queries", "hostile"}
}

// config is what the command line selects.
type config struct {
	size       string
	sizes      sizes
	runs       int
	only       []string
	jsonPath   string
	cpuProfile string
	memProfile string
	keep       bool
	tshark     bool
	explain    bool
	// ingest: calls per batch and whether calls carry header sets.
	ingestBatchSize int
	ingestHeaders   bool
	// hostileChild runs only the hostile-load measurement and writes its
	// result as JSON on stdout (used by the parent for an honest RSS).
	hostileChild bool
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.hostileChild {
		if err := runHostileChild(ctx, cfg.sizes, cfg.memProfile, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench: hostile:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		cfg  config
		only string
	)
	fs.StringVar(&cfg.size, "size", "smoke", "smoke (tiny, for CI) or full (the issue's sizes)")
	fs.IntVar(&cfg.runs, "runs", 3, "runs per figure; each figure is the median")
	fs.StringVar(&only, "only", "", "comma-separated sections to run: "+strings.Join(sectionNames(), ","))
	fs.StringVar(&cfg.jsonPath, "json", "bench-results/latest.json", "write the results as JSON here ('' to skip)")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (not of the agent subprocess) to this file")
	fs.StringVar(&cfg.memProfile, "memprofile", "", "write a heap profile of this process at the end (with -hostile-child: of the pipeline under hostile load)")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the work directory (captures, database) instead of removing it")
	fs.BoolVar(&cfg.tshark, "tshark", true, "compare with tshark in the decode section when it is installed")
	fs.BoolVar(&cfg.explain, "explain", false, "queries: log EXPLAIN (ANALYZE, BUFFERS) of each query before timing it")
	queryRows := fs.Int("query-rows", 0, "queries: stored calls (0: the size's default)")
	ingestAgents := fs.Int("ingest-agents", 0, "ingest: simulated agents (0: the size's default)")
	ingestBatches := fs.Int("ingest-batches", 0, "ingest: batches each agent sends per run (0: the size's default)")
	fs.IntVar(&cfg.ingestBatchSize, "ingest-batch-size", 1000, "ingest: calls per batch (the agent's default shipping.batch_max_calls)")
	fs.BoolVar(&cfg.ingestHeaders, "ingest-headers", true, "ingest: calls carry request and response header sets (jsonb), as agents store by default")
	fs.BoolVar(&cfg.hostileChild, "hostile-child", false, "internal: run the hostile-load measurement and print JSON")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	s, ok := sizesFor(cfg.size)
	if !ok {
		return config{}, fmt.Errorf("-size %q is not smoke or full", cfg.size)
	}
	if *queryRows > 0 {
		s.QueryRows = *queryRows
	}
	if *ingestAgents > 0 {
		s.IngestAgents = *ingestAgents
	}
	if *ingestBatches > 0 {
		s.IngestBatches = *ingestBatches
	}
	if cfg.ingestBatchSize < 1 {
		return config{}, fmt.Errorf("-ingest-batch-size %d: must be at least 1", cfg.ingestBatchSize)
	}
	cfg.sizes = s
	if cfg.runs < 1 {
		return config{}, fmt.Errorf("-runs %d: must be at least 1", cfg.runs)
	}
	if only == "" {
		cfg.only = sectionNames()
	} else {
		for _, name := range strings.Split(only, ",") {
			name = strings.TrimSpace(name)
			if !slices.Contains(sectionNames(), name) {
				return config{}, fmt.Errorf("-only: %q is not one of %s", name, strings.Join(sectionNames(), ","))
			}
			cfg.only = append(cfg.only, name)
		}
	}
	return cfg, nil
}

// run executes the selected sections, prints the table on out and writes
// the JSON file. A failing section is reported and the others still run;
// run then returns an error naming the failed sections.
func run(ctx context.Context, cfg config, out, logw io.Writer) error {
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.memProfile != "" {
		defer func() {
			if err := writeHeapProfile(cfg.memProfile); err != nil {
				fmt.Fprintln(logw, "bench:", err)
			}
		}()
	}
	e, err := newEnv(cfg, logw)
	if err != nil {
		return err
	}
	defer e.close()
	rep := newReport(cfg)
	sections := map[string]func(context.Context, *env, *report) error{
		"decode":  benchDecode,
		"live":    benchLive,
		"ingest":  benchIngest,
		"e2e":     benchE2E,
		"queries": benchQueries,
		"hostile": benchHostile,
	}
	var failed []string
	for _, name := range sectionNames() {
		if !slices.Contains(cfg.only, name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		e.logf("section %s: start", name)
		start := e.now()
		if err := sections[name](ctx, e, rep); err != nil {
			e.logf("section %s: FAILED: %v", name, err)
			rep.fail(name, err)
			failed = append(failed, name)
		}
		e.logf("section %s: done in %s", name, e.since(start))
	}
	rep.print(out)
	if cfg.jsonPath != "" {
		if err := rep.writeJSON(cfg.jsonPath); err != nil {
			return err
		}
		fmt.Fprintf(out, "\nresults written to %s\n", cfg.jsonPath)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if len(failed) > 0 {
		return fmt.Errorf("sections failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// writeHeapProfile writes the live heap after a garbage collection.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	return nil
}
