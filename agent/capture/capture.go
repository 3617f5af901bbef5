// Package capture reads packets from libpcap: a live interface (with a BPF
// filter and a read timeout) or a pcap/pcapng file.
//
// On Linux a live capture uses libpcap's TPACKET_V3 ring: packets are packed
// into blocks of the kernel buffer, and a block reaches the reader when it is
// full or, at the latest, about ReadTimeout after it began to fill.
// (Immediate mode would select TPACKET_V2 instead, whose fixed-size slots are
// sized for the largest packet of the link: on "lo", with a 64 KiB MTU, a
// 32 MiB buffer then holds about 500 packets, a few milliseconds at high
// rates.)
//
// A Handle delivers packets to a callback through Run, reusing libpcap's
// buffer, and calls an idle callback while a live interface is quiet so the
// caller can flush its timers without a second goroutine.
package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcap"
)

// Defaults applied by OpenLive to zero fields of LiveConfig.
const (
	// DefaultSnaplen captures whole packets on every common link.
	DefaultSnaplen = 262144
	// DefaultReadTimeout bounds how long Run waits for a packet before
	// calling onIdle and checking its context, and how long a captured
	// packet may wait in a partly filled kernel buffer block.
	DefaultReadTimeout = 50 * time.Millisecond
)

// LiveConfig describes a live capture. The zero value of each field but
// Interface means "use the default".
type LiveConfig struct {
	// Interface is the device name as libpcap knows it ("eth0", "lo", "any").
	Interface string
	// Filter is a BPF filter expression (pcap-filter(7)); empty captures all.
	Filter string
	// Snaplen is the maximum number of bytes kept per packet; 0 means
	// DefaultSnaplen.
	Snaplen int
	// Promiscuous puts the interface in promiscuous mode.
	Promiscuous bool
	// BufferSizeMiB is the kernel ring buffer size; 0 keeps libpcap's
	// default (2 MiB).
	BufferSizeMiB int
	// ReadTimeout is the longest a read waits before Run calls onIdle and
	// checks its context. It is also the kernel's block timeout: a packet
	// reaches Run at most about ReadTimeout after it was captured, sooner
	// when traffic fills blocks faster. 0 means DefaultReadTimeout.
	ReadTimeout time.Duration
}

// Stats are the capture counters of a Handle.
type Stats struct {
	// Received is the number of packets libpcap reports as received
	// (ps_recv: packets that passed the kernel filter, including those
	// dropped and those not read yet). On Linux "lo" the kernel counts
	// each packet twice (outgoing and incoming) while Run delivers it
	// once; both copies take room in the kernel buffer.
	Received uint64
	// KernelDrops is the number of packets dropped before reaching the
	// application: ps_drop (buffer full) plus ps_ifdrop (interface drops).
	KernelDrops uint64
}

// Handle is an open packet source. Run may be called once at a time; Stats
// and Close are safe to call concurrently with Run.
type Handle struct {
	p           *pcap.Handle
	live        bool
	linkType    layers.LinkType
	readTimeout time.Duration

	mu     sync.Mutex // guards p's lifetime against Stats and Error calls
	closed bool
	last   Stats // final counters, kept by Close
}

// OpenLive opens a live capture on cfg.Interface and compiles and sets
// cfg.Filter. Errors name the field at fault, for example `bpf filter: ...` or
// `interface "eth9": ...`.
func OpenLive(cfg LiveConfig) (*Handle, error) {
	if cfg.Interface == "" {
		return nil, errors.New("interface: must not be empty")
	}
	if cfg.Snaplen < 0 {
		return nil, fmt.Errorf("snaplen: must not be negative, got %d", cfg.Snaplen)
	}
	if cfg.Snaplen == 0 {
		cfg.Snaplen = DefaultSnaplen
	}
	if cfg.BufferSizeMiB < 0 {
		return nil, fmt.Errorf("buffer size: must not be negative, got %d MiB", cfg.BufferSizeMiB)
	}
	if cfg.ReadTimeout < 0 {
		return nil, fmt.Errorf("read timeout: must not be negative, got %s", cfg.ReadTimeout)
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}

	ifaceErr := func(what string, err error) error {
		return fmt.Errorf("interface %q: %s: %w", cfg.Interface, what, err)
	}
	inactive, err := pcap.NewInactiveHandle(cfg.Interface)
	if err != nil {
		return nil, ifaceErr("create", err)
	}
	defer inactive.CleanUp()

	if err := inactive.SetSnapLen(cfg.Snaplen); err != nil {
		return nil, fmt.Errorf("snaplen: %w", err)
	}
	if err := inactive.SetPromisc(cfg.Promiscuous); err != nil {
		return nil, fmt.Errorf("promiscuous: %w", err)
	}
	if err := inactive.SetTimeout(cfg.ReadTimeout); err != nil {
		return nil, fmt.Errorf("read timeout: %w", err)
	}
	// Not immediate mode: on Linux that would mean TPACKET_V2 and its
	// fixed-size slots (see the package comment).
	if err := inactive.SetImmediateMode(false); err != nil {
		return nil, ifaceErr("immediate mode", err)
	}
	if cfg.BufferSizeMiB > 0 {
		if err := inactive.SetBufferSize(cfg.BufferSizeMiB << 20); err != nil {
			return nil, fmt.Errorf("buffer size: %w", err)
		}
	}
	p, err := inactive.Activate()
	if err != nil {
		return nil, ifaceErr("activate", err)
	}
	if cfg.Filter != "" {
		if err := p.SetBPFFilter(cfg.Filter); err != nil {
			p.Close()
			return nil, fmt.Errorf("bpf filter: %w", err)
		}
	}
	return &Handle{
		p:           p,
		live:        true,
		linkType:    p.LinkType(),
		readTimeout: cfg.ReadTimeout,
	}, nil
}

// OpenFile opens a pcap or pcapng capture file and, if filter is not empty,
// applies it as a BPF filter.
func OpenFile(path, filter string) (*Handle, error) {
	p, err := pcap.OpenOffline(path)
	if err != nil {
		return nil, fmt.Errorf("open capture file %q: %w", path, err)
	}
	if filter != "" {
		if err := p.SetBPFFilter(filter); err != nil {
			p.Close()
			return nil, fmt.Errorf("bpf filter: %w", err)
		}
	}
	return &Handle{p: p, linkType: p.LinkType()}, nil
}

// LinkType returns the link-layer type of the packets the handle delivers.
func (h *Handle) LinkType() layers.LinkType { return h.linkType }

// Run reads packets and passes each to onPacket until ctx is done (returns
// nil), the end of a file is reached (returns nil), the handle is closed
// (returns nil) or a read fails (returns the error, wrapped; for a
// truncated file this happens after every packet before the cut has been
// delivered).
//
// data is only valid during the onPacket call: it points into libpcap's
// buffer. Copy what you keep.
//
// For a live capture, onIdle (which may be nil) is called with the wall
// clock at least every ReadTimeout while no packet arrives, and also when
// packets keep arriving but ReadTimeout has passed since its last call, so
// the caller can flush timers. It is never called for files, whose
// timestamps are not wall-clock time. Cancelling ctx stops a live read
// within about ReadTimeout.
func (h *Handle) Run(ctx context.Context, onPacket func(data []byte, ts time.Time), onIdle func(now time.Time)) error {
	var done atomic.Bool
	stop := context.AfterFunc(ctx, func() { done.Store(true) })
	defer stop()
	if ctx.Err() != nil {
		return nil
	}

	idle := onIdle != nil && h.live
	var lastIdle time.Time
	if idle {
		lastIdle = time.Now()
	}
	for !done.Load() {
		data, ci, err := h.p.ZeroCopyReadPacketData()
		switch {
		case err == nil:
			onPacket(data, ci.Timestamp)
			// Live timestamps are wall-clock, so they tell without a
			// clock read whether onIdle is due on a busy interface.
			if idle && ci.Timestamp.Sub(lastIdle) >= h.readTimeout {
				lastIdle = time.Now()
				onIdle(lastIdle)
			}
		case errors.Is(err, pcap.NextErrorTimeoutExpired):
			if idle {
				lastIdle = time.Now()
				onIdle(lastIdle)
			}
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, pcap.NextErrorReadError):
			return fmt.Errorf("read packet: %w", h.readError(err))
		default:
			return fmt.Errorf("read packet: %w", err)
		}
	}
	return nil
}

// readError returns libpcap's message for the last read error (for example
// "truncated dump file; ..."), or fallback when the handle is closed.
func (h *Handle) readError(fallback error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return fallback
	}
	if msg := h.p.Error(); msg != nil && msg.Error() != "" {
		return msg
	}
	return fallback
}

// Stats returns the capture counters. It is safe to call concurrently with
// Run and after Close (it then returns the last counters). Files report zero.
func (h *Handle) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || !h.live {
		return h.last
	}
	return h.statsLocked()
}

func (h *Handle) statsLocked() Stats {
	s, err := h.p.Stats()
	if err != nil {
		return h.last
	}
	h.last = Stats{
		Received:    uint64(s.PacketsReceived),
		KernelDrops: uint64(s.PacketsDropped) + uint64(s.PacketsIfDropped),
	}
	return h.last
}

// Close releases the handle. A Run in progress returns nil within about
// ReadTimeout. Close may be called more than once.
func (h *Handle) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	if h.live {
		h.statsLocked()
	}
	h.closed = true
	h.p.Close()
}

// Interface describes a capturable network interface.
type Interface struct {
	Name        string
	Description string
	// Addresses are in CIDR form ("10.0.0.2/24") when libpcap knows the
	// netmask, else plain IPs.
	Addresses []string
	Loopback  bool
	Up        bool
}

// pcap_if flags, used when the OS does not know the device (e.g. "any").
const (
	pcapIfLoopback = 0x1
	pcapIfUp       = 0x2
)

// ListInterfaces returns the devices libpcap can capture from, with flags
// from the operating system where it knows the device.
func ListInterfaces() ([]Interface, error) {
	devs, err := pcap.FindAllDevs()
	if err != nil {
		return nil, fmt.Errorf("find capture devices: %w", err)
	}
	osIfaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list os interfaces: %w", err)
	}
	flags := make(map[string]net.Flags, len(osIfaces))
	for _, i := range osIfaces {
		flags[i.Name] = i.Flags
	}

	out := make([]Interface, 0, len(devs))
	for _, d := range devs {
		ifc := Interface{Name: d.Name, Description: d.Description}
		for _, a := range d.Addresses {
			if a.IP == nil {
				continue
			}
			if a.Netmask != nil && len(a.Netmask) == len(a.IP) {
				ifc.Addresses = append(ifc.Addresses, (&net.IPNet{IP: a.IP, Mask: a.Netmask}).String())
			} else {
				ifc.Addresses = append(ifc.Addresses, a.IP.String())
			}
		}
		if f, ok := flags[d.Name]; ok {
			ifc.Loopback = f&net.FlagLoopback != 0
			ifc.Up = f&net.FlagUp != 0
		} else {
			ifc.Loopback = d.Flags&pcapIfLoopback != 0
			ifc.Up = d.Flags&pcapIfUp != 0
		}
		out = append(out, ifc)
	}
	return out, nil
}

// ValidateFilter compiles expr for linkType and snaplen without opening a
// device. The error carries libpcap's message.
func ValidateFilter(linkType layers.LinkType, snaplen int, expr string) error {
	if snaplen <= 0 {
		snaplen = DefaultSnaplen
	}
	if _, err := pcap.CompileBPFFilter(linkType, snaplen, expr); err != nil {
		return fmt.Errorf("bpf filter: %w", err)
	}
	return nil
}
