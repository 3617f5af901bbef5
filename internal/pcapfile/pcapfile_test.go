package pcapfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

type rec struct {
	data []byte
	ts   time.Time
}

var recs = []rec{
	{[]byte{1, 2, 3}, time.Unix(1700000000, 123456789)},
	{bytes.Repeat([]byte{0xab}, 1500), time.Unix(1700000001, 1000)},
	{nil, time.Unix(1700000002, 0)},
	{[]byte("last"), time.Unix(1700000003, 999999000)},
}

// write returns a pcap file of recs written by gopacket's writer.
func write(t testing.TB, nanos bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if nanos {
		w = pcapgo.NewWriterNanos(&buf)
	}
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		ci := gopacket.CaptureInfo{Timestamp: r.ts, CaptureLength: len(r.data), Length: len(r.data)}
		if err := w.WritePacket(ci, r.data); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// bigEndian rewrites a little-endian pcap file in big-endian order.
func bigEndian(le []byte) []byte {
	be := bytes.Clone(le)
	swap := func(off int) { binary.BigEndian.PutUint32(be[off:], binary.LittleEndian.Uint32(le[off:])) }
	for _, off := range []int{0, 16, 20} {
		swap(off)
	}
	binary.BigEndian.PutUint16(be[4:], binary.LittleEndian.Uint16(le[4:]))
	binary.BigEndian.PutUint16(be[6:], binary.LittleEndian.Uint16(le[6:]))
	for off := fileHeaderLen; off < len(le); {
		n := int(binary.LittleEndian.Uint32(le[off+8:]))
		for i := 0; i < recordHeaderLen; i += 4 {
			swap(off + i)
		}
		off += recordHeaderLen + n
	}
	return be
}

func TestReadsEveryRecord(t *testing.T) {
	micros := write(t, false)
	nanos := write(t, true)
	for _, tc := range []struct {
		name  string
		data  []byte
		nanos bool
	}{
		{"little-endian microseconds", micros, false},
		{"little-endian nanoseconds", nanos, true},
		{"big-endian microseconds", bigEndian(micros), false},
		{"big-endian nanoseconds", bigEndian(nanos), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if r.LinkType() != layers.LinkTypeEthernet {
				t.Fatalf("link type %v, want Ethernet", r.LinkType())
			}
			for i, want := range recs {
				data, ts, err := r.Next()
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if !bytes.Equal(data, want.data) {
					t.Fatalf("record %d: data %x, want %x", i, data, want.data)
				}
				wantTS := want.ts
				if !tc.nanos {
					wantTS = wantTS.Truncate(time.Microsecond)
				}
				if !ts.Equal(wantTS) {
					t.Fatalf("record %d: time %s, want %s", i, ts, wantTS)
				}
			}
			for range 2 {
				if _, _, err := r.Next(); err != io.EOF {
					t.Fatalf("after the last record: %v, want io.EOF", err)
				}
			}
			if r.Offset() != len(tc.data) {
				t.Fatalf("offset %d, want %d", r.Offset(), len(tc.data))
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	good := write(t, true)
	tooLong := bytes.Clone(good)
	binary.LittleEndian.PutUint32(tooLong[fileHeaderLen+8:], 65537) // first record's caplen > snaplen
	for _, tc := range []struct {
		name    string
		data    []byte
		newErr  string
		records int // complete records before the error
		nextErr string
	}{
		{name: "empty", data: nil, newErr: "0 bytes is shorter than a pcap file header"},
		{name: "pcapng", data: append([]byte{0x0a, 0x0d, 0x0d, 0x0a}, make([]byte, 24)...),
			newErr: "not a pcap file (magic 0x0a0d0d0a; pcapng is read by libpcap)"},
		{name: "cut in a record header", data: good[:fileHeaderLen+recordHeaderLen+3+5], records: 1,
			nextErr: "record header at offset 43: truncated capture file"},
		{name: "cut in a record's data", data: good[:len(good)-2], records: 3,
			nextErr: "record at offset 1575: 2 of 4 bytes: truncated capture file"},
		{name: "captured length over the snaplen", data: tooLong, records: 0,
			nextErr: "record at offset 24: captured length 65537 exceeds the snaplen 65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.data)
			if tc.newErr != "" {
				if err == nil || err.Error() != tc.newErr {
					t.Fatalf("New: %v, want %q", err, tc.newErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range tc.records {
				if _, _, err := r.Next(); err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
			}
			for range 2 { // the error sticks
				_, _, err = r.Next()
				if err == nil || err.Error() != tc.nextErr {
					t.Fatalf("Next: %v, want %q", err, tc.nextErr)
				}
			}
			if tc.nextErr != "" && bytes.Contains([]byte(tc.nextErr), []byte("truncated")) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("%v does not wrap ErrTruncated", err)
			}
		})
	}
}

func TestOpenMapsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pcap")
	if err := os.WriteFile(path, write(t, true), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, _, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != len(recs) {
		t.Fatalf("%d records, want %d", n, len(recs))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next after Close: %v, want io.EOF", err)
	}

	short := filepath.Join(t.TempDir(), "short.pcap")
	if err := os.WriteFile(short, []byte{0xd4, 0xc3}, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(short); err == nil || err.Error() != "capture "+short+": 2 bytes is shorter than a pcap file header" {
		t.Fatalf("Open of a 2-byte file: %v", err)
	}
}

// FuzzReader: any input either fails New or yields records that lie inside
// the input, then io.EOF or an error, without panicking.
func FuzzReader(f *testing.F) {
	f.Add(write(f, false))
	f.Add(write(f, true))
	f.Add(bigEndian(write(f, true)))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := New(data)
		if err != nil {
			return
		}
		total := fileHeaderLen
		for {
			pkt, _, err := r.Next()
			if err != nil {
				break
			}
			if len(pkt) > MaxPacket {
				t.Fatalf("packet of %d bytes", len(pkt))
			}
			total += recordHeaderLen + len(pkt)
			if total > len(data) || r.Offset() != total {
				t.Fatalf("offset %d, consumed %d of %d", r.Offset(), total, len(data))
			}
		}
	})
}

func BenchmarkNext(b *testing.B) {
	data := write(b, true)
	b.ReportAllocs()
	for b.Loop() {
		r, err := New(data)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, _, err := r.Next(); err != nil {
				break
			}
		}
	}
}
