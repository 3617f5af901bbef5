// Command pcapgen writes synthetic HTTP/1.1 captures.
//
// Volume mode writes keep-alive traffic among several clients and servers:
//
//	go run ./internal/pcapgen/cmd/pcapgen -out /tmp/bench.pcap -conns 1000 -exchanges 50 -seed 1 -impair 0.01 -truth
//
// Fixture mode regenerates the project's fixtures (see testdata/pcaps/README.md):
//
//	go run ./internal/pcapgen/cmd/pcapgen -fixtures testdata/pcaps
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/orbweaver/orbweaver/internal/pcapgen"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pcapgen:", err)
		os.Exit(1)
	}
}

func run(args []string, log io.Writer) error {
	fs := flag.NewFlagSet("pcapgen", flag.ContinueOnError)
	fs.SetOutput(log)
	out := fs.String("out", "", "output pcap file (volume mode)")
	conns := fs.Int("conns", 100, "number of TCP connections")
	exchanges := fs.Int("exchanges", 10, "HTTP exchanges per connection")
	concurrency := fs.Int("concurrency", 64, "connections open at once")
	seed := fs.Int64("seed", 1, "random seed")
	impair := fs.Float64("impair", 0, "per-segment reorder and retransmit probability")
	ipv6 := fs.Bool("ipv6", false, "use IPv6 addresses")
	truth := fs.Bool("truth", false, "also write OUT.truth.json (array of exchanges)")
	fixtures := fs.String("fixtures", "", "regenerate the fixtures into this directory instead")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *fixtures != "" {
		if err := pcapgen.WriteFixtures(*fixtures); err != nil {
			return err
		}
		fmt.Fprintf(log, "wrote %d fixtures to %s\n", len(pcapgen.Fixtures()), *fixtures)
		return nil
	}
	if *out == "" {
		return errors.New("-out or -fixtures is required")
	}
	spec := pcapgen.VolumeSpec{
		Connections: *conns, ExchangesPerConn: *exchanges, Concurrency: *concurrency,
		Seed: *seed, ImpairmentRate: *impair, IPv6: *ipv6,
	}
	var tw *truthWriter
	if *truth {
		var err error
		if tw, err = newTruthWriter(*out + ".truth.json"); err != nil {
			return err
		}
		spec.OnExchange = tw.add
	}
	f, err := os.Create(*out)
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	began := time.Now()
	sum, err := pcapgen.GenerateHTTP(f, spec)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close output: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	if tw != nil {
		if err := tw.close(); err != nil {
			return err
		}
	}
	el := time.Since(began)
	fmt.Fprintf(log, "wrote %s: %d packets, %d bytes, %d exchanges, %d connections, %s capture span, in %s (%.0f packets/s)\n",
		*out, sum.Packets, sum.Bytes, sum.Exchanges, sum.Connections, sum.Last.Sub(sum.First).Round(time.Millisecond),
		el.Round(time.Millisecond), float64(sum.Packets)/el.Seconds())
	return nil
}

// truthWriter streams a JSON array of truths to a file.
type truthWriter struct {
	f   *os.File
	bw  *bufio.Writer
	enc *json.Encoder
	n   int
	err error
}

func newTruthWriter(path string) (*truthWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create truth: %w", err)
	}
	bw := bufio.NewWriter(f)
	bw.WriteString("[\n")
	return &truthWriter{f: f, bw: bw, enc: json.NewEncoder(bw)}, nil
}

func (t *truthWriter) add(tr pcapgen.Truth) {
	if t.err != nil {
		return
	}
	if t.n > 0 {
		t.bw.WriteString(",")
	}
	t.n++
	if err := t.enc.Encode(tr); err != nil {
		t.err = fmt.Errorf("write truth: %w", err)
	}
}

func (t *truthWriter) close() error {
	t.bw.WriteString("]\n")
	err := t.bw.Flush()
	if cerr := t.f.Close(); err == nil {
		err = cerr
	}
	if t.err != nil {
		return t.err
	}
	if err != nil {
		return fmt.Errorf("write truth: %w", err)
	}
	return nil
}
