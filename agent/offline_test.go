package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

func fixture(t *testing.T, name string) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "testdata", "pcaps", name)
}

func TestOfflineWritesOneJSONObjectPerCall(t *testing.T) {
	var out strings.Builder
	sum, err := RunOffline(context.Background(), OfflineConfig{File: fixture(t, "http_keepalive.pcap")}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var truth []struct {
		Method string `json:"method"`
		Path   string `json:"path"`
		Status int    `json:"status"`
	}
	b, err := os.ReadFile(fixture(t, "http_keepalive.truth.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &truth); err != nil {
		t.Fatal(err)
	}
	var got, want []string
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var c struct {
			Method      string  `json:"method"`
			Path        string  `json:"path"`
			Status      *int    `json:"status"`
			Time        string  `json:"time"`
			DurationUS  *int64  `json:"duration_us"`
			ParseStatus string  `json:"parse_status"`
			ServerIP    *string `json:"server_ip"`
		}
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if c.Status == nil || c.DurationUS == nil || *c.DurationUS <= 0 || c.ParseStatus != "ok" || c.ServerIP == nil || !strings.Contains(c.Time, "T") {
			t.Errorf("incomplete call: %s", sc.Text())
			continue
		}
		got = append(got, c.Method+" "+c.Path+" "+itoa(*c.Status))
	}
	for _, x := range truth {
		want = append(want, x.Method+" "+x.Path+" "+itoa(x.Status))
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if sum.Calls != uint64(len(truth)) || sum.Packets == 0 || sum.Bytes == 0 || sum.ParseErrors != 0 || sum.Error != "" {
		t.Fatalf("summary = %+v", sum)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
