package pcapgen

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tsharkCompare says how much of a fixture is compared with tshark.
type tsharkCompare int

const (
	// compareFull: every request and response, sizes and frame times.
	compareFull tsharkCompare = iota
	// compareRequests: requests only (method, URI, frame time).
	compareRequests
	// compareTruncated: tshark must report the cut, and every exchange of
	// the truth (those complete before the cut) must be found.
	compareTruncated
)

// tsharkFixtures lists the fixtures checked against tshark and why some are
// only partly compared.
var tsharkFixtures = []struct {
	name string
	mode tsharkCompare
	why  string
}{
	{"http_keepalive", compareFull, ""},
	{"http_impaired", compareFull, "reordered segments: needs tcp.reassemble_out_of_order, which tsharkArgs sets"},
	{"http_chunked", compareFull, ""},
	{"http_pipelined", compareFull, ""},
	{"http_no_response", compareFull, "requests answered by a RST have no response row"},
	{"http_ipv6", compareFull, ""},
	// Deliberately not compared in full: tshark 4.0 treats the leading
	// response tail as the start of the stream and fails to recognise the
	// first responses after it; the agent must do better, so only the
	// requests are checked.
	{"http_midstream", compareRequests, "tshark mis-parses responses after the mid-stream start"},
	// Deliberately not compared in full: tshark's reassembly stops at the
	// gap, so the damaged response and every later one on the connection
	// are missing from its output.
	{"http_loss", compareRequests, "tshark stops reassembling the server stream at the gap"},
	{"truncated", compareTruncated, ""},
}

// tsharkExchange is an exchange as tshark dissects it.
type tsharkExchange struct {
	stream            string
	client, server    string // ip:port
	method, uri       string
	status            int
	reqBody, respBody int
	reqTime, respTime int64 // epoch ns of the frames that complete each message
	hasResp           bool
}

// tsharkArgs are the preferences used for every run: full reassembly,
// including out-of-order segments, and checksum validation.
func tsharkArgs(file string, ports []int) []string {
	args := []string{"-r", file, "-n",
		"-o", "tcp.desegment_tcp_streams:TRUE",
		"-o", "tcp.reassemble_out_of_order:TRUE",
		"-o", "http.desegment_headers:TRUE",
		"-o", "http.desegment_body:TRUE",
		"-o", "http.dechunk_body:TRUE",
		"-o", "ip.check_checksum:TRUE",
		"-o", "tcp.check_checksum:TRUE",
	}
	for _, p := range ports {
		args = append(args, "-d", fmt.Sprintf("tcp.port==%d,http", p))
	}
	return args
}

// runTshark runs tshark and returns stdout, stderr and the exit error.
func runTshark(t *testing.T, bin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// findTshark returns tshark's path, skipping the test when it is missing
// unless CI=true.
func findTshark(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("tshark")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tshark is required when CI=true: %v", err)
		}
		t.Skipf("tshark not installed: %v", err)
	}
	return bin
}

// TestFixturesMatchTshark dissects every fixture with tshark and compares
// the HTTP exchanges it finds with the truth; it also checks that tshark
// reports no bad checksum, malformed packet or error-level expert info.
func TestFixturesMatchTshark(t *testing.T) {
	bin := findTshark(t)
	for _, fx := range tsharkFixtures {
		t.Run(fx.name, func(t *testing.T) {
			_, truth := loadFixture(t, fx.name)
			file := filepath.Join(fixtureDir, fx.name+".pcap")
			var ports []int
			for _, tr := range truth {
				if !slices.Contains(ports, tr.ServerPort) {
					ports = append(ports, tr.ServerPort)
				}
			}
			args := tsharkArgs(file, ports)

			// Problems: bad IPv4/TCP checksums, malformed, error expert info.
			out, stderr, err := runTshark(t, bin, append(slices.Clone(args),
				"-Y", "ip.checksum.status == 0 || tcp.checksum.status == 0 || _ws.malformed || _ws.expert.severity == error",
				"-T", "fields", "-e", "frame.number", "-e", "_ws.col.info")...)
			if fx.mode == compareTruncated {
				if err == nil || !strings.Contains(stderr, "cut short in the middle of a packet") {
					t.Errorf("tshark did not report the cut: err %v, stderr %q", err, stderr)
				}
			} else if err != nil {
				t.Fatalf("tshark: %v: %s", err, stderr)
			}
			if strings.TrimSpace(out) != "" {
				t.Errorf("tshark flags frames:\n%s", out)
			}

			got, err := tsharkExchanges(t, bin, args)
			if err != nil && fx.mode != compareTruncated {
				t.Fatal(err)
			}
			switch fx.mode {
			case compareFull:
				compareTshark(t, got, truth, true)
			case compareRequests:
				compareTshark(t, got, truth, false)
			case compareTruncated:
				// tshark may also show the request whose response was
				// cut; every complete exchange must be there.
				if len(got) < len(truth) {
					t.Fatalf("tshark found %d exchanges, truth has %d", len(got), len(truth))
				}
				compareTshark(t, got[:len(truth)], truth, true)
			}
			t.Logf("tshark: %d exchanges (%s), truth: %d", len(got), fx.why, len(truth))
		})
	}
}

// TestTsharkDetectsBadChecksum is the negative control of the checksum
// check: a copy of a fixture with one payload byte flipped must be flagged.
func TestTsharkDetectsBadChecksum(t *testing.T) {
	bin := findTshark(t)
	pcap, _ := loadFixture(t, "http_keepalive")
	recs, err := pcapRecords(pcap)
	if err != nil {
		t.Fatal(err)
	}
	bad := slices.Clone(pcap)
	r := recs[3] // the first request
	bad[r.offset+pcapRecordHeaderLen+r.size-1] ^= 0xff
	file := filepath.Join(t.TempDir(), "bad.pcap")
	if err := os.WriteFile(file, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runTshark(t, bin, append(tsharkArgs(file, nil), "-Y", "tcp.checksum.status == 0", "-T", "fields", "-e", "frame.number")...)
	if err != nil {
		t.Fatalf("tshark: %v: %s", err, stderr)
	}
	if strings.TrimSpace(out) != "4" {
		t.Errorf("tshark flagged frames %q, want 4", out)
	}
}

// tsharkExchanges lists the HTTP exchanges tshark dissects, pairing the
// n-th response of a TCP stream with its n-th request, ordered by request
// frame. A non-nil error is returned with the rows read so far when tshark
// fails (e.g. on a truncated file).
func tsharkExchanges(t *testing.T, bin string, args []string) ([]tsharkExchange, error) {
	t.Helper()
	fields := []string{"frame.time_epoch", "tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport",
		"http.request.method", "http.request.uri", "http.response.code", "http.file_data"}
	args = append(slices.Clone(args), "-Y", "http", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f")
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, stderr, runErr := runTshark(t, bin, args...)
	if runErr != nil {
		runErr = fmt.Errorf("tshark: %w: %s", runErr, stderr)
	}
	var ex []tsharkExchange
	pendingResp := map[string][]int{} // stream → indexes of requests awaiting a response
	for line := range strings.SplitSeq(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != len(fields) {
			return ex, fmt.Errorf("tshark row %q: %d fields", line, len(f))
		}
		ts, err := parseEpoch(f[0])
		if err != nil {
			return ex, err
		}
		src, dst := f[2]+f[3], f[5]+f[6]
		switch {
		case f[8] != "":
			if strings.Contains(src, ":") {
				src, dst = "["+src+"]", "["+dst+"]"
			}
			ex = append(ex, tsharkExchange{stream: f[1], client: src + ":" + f[4], server: dst + ":" + f[7],
				method: f[8], uri: f[9], reqBody: len(f[11]), reqTime: ts})
			pendingResp[f[1]] = append(pendingResp[f[1]], len(ex)-1)
		case f[10] != "":
			q := pendingResp[f[1]]
			if len(q) == 0 {
				// A response without a request (mid-stream start).
				continue
			}
			pendingResp[f[1]] = q[1:]
			e := &ex[q[0]]
			e.status, _ = strconv.Atoi(f[10])
			e.respBody = len(f[11])
			e.respTime = ts
			e.hasResp = true
		}
	}
	return ex, runErr
}

// parseEpoch parses tshark's "seconds.nanoseconds" exactly.
func parseEpoch(s string) (int64, error) {
	sec, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) != 9 {
		return 0, fmt.Errorf("tshark time %q: want 9 decimals", s)
	}
	a, err1 := strconv.ParseInt(sec, 10, 64)
	b, err2 := strconv.ParseInt(frac, 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("tshark time %q: %w", s, err)
	}
	return a*1e9 + b, nil
}

// compareTshark compares tshark's exchanges with the truth, both in
// request order. full also compares responses and body sizes.
func compareTshark(t *testing.T, got []tsharkExchange, truth []Truth, full bool) {
	t.Helper()
	// Order both by the time of the frame completing the request, then
	// by client, so equal timestamps on different connections pair up.
	got = slices.Clone(got)
	slices.SortStableFunc(got, func(a, b tsharkExchange) int {
		if a.reqTime != b.reqTime {
			return cmp.Compare(a.reqTime, b.reqTime)
		}
		return strings.Compare(a.client, b.client)
	})
	truth = slices.Clone(truth)
	slices.SortStableFunc(truth, func(a, b Truth) int {
		if c := a.RequestEndTime.Compare(b.RequestEndTime); c != 0 {
			return c
		}
		return strings.Compare(joinHostPort(a.ClientIP, a.ClientPort), joinHostPort(b.ClientIP, b.ClientPort))
	})
	if len(got) != len(truth) {
		t.Errorf("tshark found %d requests, truth has %d", len(got), len(truth))
	}
	for i := range min(len(got), len(truth)) {
		g, w := got[i], truth[i]
		client := joinHostPort(w.ClientIP, w.ClientPort)
		server := joinHostPort(w.ServerIP, w.ServerPort)
		uri := w.Path
		if w.Query != "" {
			uri += "?" + w.Query
		}
		var diffs []string
		check := func(what string, got, want any) {
			if got != want {
				diffs = append(diffs, fmt.Sprintf("%s %v, truth %v", what, got, want))
			}
		}
		check("client", g.client, client)
		check("server", g.server, server)
		check("method", g.method, w.Method)
		check("uri", g.uri, uri)
		check("request frame time", g.reqTime, w.RequestEndTime.UnixNano())
		if full {
			check("request body", g.reqBody, w.RequestBodySize)
			check("has response", g.hasResp, w.Status != 0)
			if w.Status != 0 {
				check("status", g.status, w.Status)
				check("response body", g.respBody, w.ResponseBodySize)
				check("response frame time", g.respTime, w.ResponseEndTime.UnixNano())
			}
		}
		if len(diffs) > 0 {
			t.Errorf("exchange %d (%s %s): %s", i, w.Method, uri, strings.Join(diffs, "; "))
		}
	}
}

func joinHostPort(ip string, port int) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + strconv.Itoa(port)
	}
	return ip + ":" + strconv.Itoa(port)
}
