// Package pcapfile reads classic pcap files (microsecond or nanosecond
// timestamps, either byte order) from a memory mapping, without copying
// packet data: each packet is a slice of the mapping. It is the fast path
// for reading large captures of our own (the benchmark reads a ~1 GB file
// with it) and is deliberately small: pcapng and BPF filters are libpcap's
// job (agent/capture.OpenFile).
//
// Malformed input never panics: a header that is not pcap, a record whose
// captured length is larger than the file's snaplen (or than MaxPacket), or
// a record cut by the end of the file are errors returned by Next after
// every complete packet before them.
package pcapfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// MaxPacket bounds a record's captured length whatever the file header
// says: a larger record is an error, not an allocation or a huge slice.
const MaxPacket = 1 << 20

const (
	fileHeaderLen   = 24
	recordHeaderLen = 16

	magicMicros = 0xa1b2c3d4
	magicNanos  = 0xa1b23c4d
)

// ErrTruncated is wrapped by Next's error when the file ends inside a
// record.
var ErrTruncated = errors.New("truncated capture file")

// Reader iterates over the packets of a pcap file held in memory.
type Reader struct {
	data     []byte
	off      int
	order    binary.ByteOrder
	nanos    bool
	snaplen  uint32
	linkType layers.LinkType
	unmap    func() error
}

// Open maps the file at path and reads its header. Close releases the
// mapping; slices returned by Next are invalid after it.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat capture: %w", err)
	}
	size := st.Size()
	if size < fileHeaderLen {
		return nil, fmt.Errorf("capture %s: %d bytes is shorter than a pcap file header", path, size)
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("capture %s: %d bytes is too large to map", path, size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map capture %s: %w", path, err)
	}
	// Sequential reading: ask the kernel to read ahead aggressively and
	// drop pages behind us. Advice is best-effort; failure changes nothing.
	_ = syscall.Madvise(data, syscall.MADV_SEQUENTIAL)
	r, err := New(data)
	if err != nil {
		_ = syscall.Munmap(data)
		return nil, fmt.Errorf("capture %s: %w", path, err)
	}
	r.unmap = func() error { return syscall.Munmap(data) }
	return r, nil
}

// New reads the pcap header at the start of data and returns a Reader over
// the packets that follow. data is not copied.
func New(data []byte) (*Reader, error) {
	if len(data) < fileHeaderLen {
		return nil, fmt.Errorf("%d bytes is shorter than a pcap file header", len(data))
	}
	r := &Reader{data: data, off: fileHeaderLen}
	switch {
	case binary.LittleEndian.Uint32(data) == magicMicros:
		r.order = binary.LittleEndian
	case binary.LittleEndian.Uint32(data) == magicNanos:
		r.order, r.nanos = binary.LittleEndian, true
	case binary.BigEndian.Uint32(data) == magicMicros:
		r.order = binary.BigEndian
	case binary.BigEndian.Uint32(data) == magicNanos:
		r.order, r.nanos = binary.BigEndian, true
	default:
		return nil, fmt.Errorf("not a pcap file (magic %#08x; pcapng is read by libpcap)", binary.BigEndian.Uint32(data))
	}
	r.snaplen = r.order.Uint32(data[16:])
	if r.snaplen == 0 || r.snaplen > MaxPacket {
		// Some writers put 0 or a huge value here; MaxPacket still bounds
		// every record.
		r.snaplen = MaxPacket
	}
	r.linkType = layers.LinkType(r.order.Uint32(data[20:]) & 0x0fffffff)
	return r, nil
}

// LinkType returns the link-layer type of the file's packets.
func (r *Reader) LinkType() layers.LinkType { return r.linkType }

// Next returns the next packet's data (a slice of the mapping, valid until
// Close) and capture time. At the end of the file it returns io.EOF; for a
// malformed or cut record it returns an error wrapping ErrTruncated or
// describing the record, and keeps returning it.
func (r *Reader) Next() ([]byte, time.Time, error) {
	rest := len(r.data) - r.off
	if rest == 0 {
		return nil, time.Time{}, io.EOF
	}
	if rest < recordHeaderLen {
		return nil, time.Time{}, fmt.Errorf("record header at offset %d: %w", r.off, ErrTruncated)
	}
	h := r.data[r.off : r.off+recordHeaderLen]
	sec := r.order.Uint32(h[0:])
	frac := r.order.Uint32(h[4:])
	capLen := r.order.Uint32(h[8:])
	if capLen > r.snaplen {
		return nil, time.Time{}, fmt.Errorf("record at offset %d: captured length %d exceeds the snaplen %d", r.off, capLen, r.snaplen)
	}
	if uint64(capLen) > uint64(rest-recordHeaderLen) {
		return nil, time.Time{}, fmt.Errorf("record at offset %d: %d of %d bytes: %w", r.off, rest-recordHeaderLen, capLen, ErrTruncated)
	}
	start := r.off + recordHeaderLen
	r.off = start + int(capLen)
	ns := int64(frac)
	if !r.nanos {
		ns *= 1000
	}
	return r.data[start:r.off:r.off], time.Unix(int64(sec), ns), nil
}

// Offset returns how many bytes of the file have been consumed.
func (r *Reader) Offset() int { return r.off }

// Close releases the mapping (for a Reader from Open). It may be called
// more than once.
func (r *Reader) Close() error {
	if r.unmap == nil {
		return nil
	}
	err := r.unmap()
	r.unmap = nil
	r.data = nil
	r.off = 0
	if err != nil {
		return fmt.Errorf("unmap capture: %w", err)
	}
	return nil
}
