package pcapgen

import (
	"encoding/binary"
	"net/netip"
)

// TCP flag bits as they appear in byte 13 of the TCP header.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
)

const (
	ethHeaderLen  = 14
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	tcpHeaderLen  = 20
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	protoTCP      = 6
)

// synOptions are the TCP options carried by SYN and SYN-ACK segments:
// MSS (filled in per connection), NOP, NOP, SACK permitted.
var synOptionsTemplate = [8]byte{2, 4, 0, 0, 1, 1, 4, 2}

// segment describes one TCP segment to serialise.
type segment struct {
	src, dst     netip.AddrPort
	srcMAC       [6]byte
	dstMAC       [6]byte
	ipID         uint16
	seq, ack     uint32
	flags        byte
	window       uint16
	mss          uint16 // non-zero: add SYN options with this MSS
	payload      []byte
	payloadExtra []byte // appended after payload (lets callers avoid a copy)
}

// macFor derives a locally administered unicast MAC address from an IP
// address, so each host keeps a stable MAC across a capture.
func macFor(a netip.Addr) [6]byte {
	b := a.As16()
	return [6]byte{0x02, 0x42, b[12], b[13], b[14], b[15]}
}

// frameLen returns the length of the Ethernet frame for s.
func (s *segment) frameLen() int {
	n := ethHeaderLen + tcpHeaderLen + len(s.payload) + len(s.payloadExtra)
	if s.mss != 0 {
		n += len(synOptionsTemplate)
	}
	if s.src.Addr().Is4() {
		return n + ipv4HeaderLen
	}
	return n + ipv6HeaderLen
}

// appendFrame serialises s as an Ethernet/IP/TCP frame with valid IPv4 and
// TCP checksums and appends it to buf.
func appendFrame(buf []byte, s *segment) []byte {
	total := s.frameLen()
	start := len(buf)
	buf = append(buf, make([]byte, total)...)
	f := buf[start:]

	copy(f[0:6], s.dstMAC[:])
	copy(f[6:12], s.srcMAC[:])
	v4 := s.src.Addr().Is4()
	optLen := 0
	if s.mss != 0 {
		optLen = len(synOptionsTemplate)
	}
	tcpLen := tcpHeaderLen + optLen + len(s.payload) + len(s.payloadExtra)

	var ipHdrLen int
	var pseudo uint32
	if v4 {
		binary.BigEndian.PutUint16(f[12:14], etherTypeIPv4)
		ip := f[ethHeaderLen : ethHeaderLen+ipv4HeaderLen]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:4], uint16(ipv4HeaderLen+tcpLen))
		binary.BigEndian.PutUint16(ip[4:6], s.ipID)
		binary.BigEndian.PutUint16(ip[6:8], 0x4000) // DF
		ip[8] = 64
		ip[9] = protoTCP
		src4, dst4 := s.src.Addr().As4(), s.dst.Addr().As4()
		copy(ip[12:16], src4[:])
		copy(ip[16:20], dst4[:])
		binary.BigEndian.PutUint16(ip[10:12], ^fold(sum16(ip, 0)))
		ipHdrLen = ipv4HeaderLen
		pseudo = sum16(ip[12:20], 0) + protoTCP + uint32(tcpLen)
	} else {
		binary.BigEndian.PutUint16(f[12:14], etherTypeIPv6)
		ip := f[ethHeaderLen : ethHeaderLen+ipv6HeaderLen]
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:6], uint16(tcpLen))
		ip[6] = protoTCP
		ip[7] = 64
		src16, dst16 := s.src.Addr().As16(), s.dst.Addr().As16()
		copy(ip[8:24], src16[:])
		copy(ip[24:40], dst16[:])
		ipHdrLen = ipv6HeaderLen
		pseudo = sum16(ip[8:40], 0) + protoTCP + uint32(tcpLen)
	}

	t := f[ethHeaderLen+ipHdrLen:]
	binary.BigEndian.PutUint16(t[0:2], s.src.Port())
	binary.BigEndian.PutUint16(t[2:4], s.dst.Port())
	binary.BigEndian.PutUint32(t[4:8], s.seq)
	binary.BigEndian.PutUint32(t[8:12], s.ack)
	t[12] = byte((tcpHeaderLen+optLen)/4) << 4
	t[13] = s.flags
	binary.BigEndian.PutUint16(t[14:16], s.window)
	off := tcpHeaderLen
	if optLen != 0 {
		copy(t[off:], synOptionsTemplate[:])
		binary.BigEndian.PutUint16(t[off+2:off+4], s.mss)
		off += optLen
	}
	off += copy(t[off:], s.payload)
	copy(t[off:], s.payloadExtra)
	binary.BigEndian.PutUint16(t[16:18], ^fold(sum16(t, pseudo)))
	return buf
}

// sum16 adds b as big-endian 16-bit words (odd trailing byte padded with
// zero) to acc, without folding.
func sum16(b []byte, acc uint32) uint32 {
	s := uint64(acc)
	for len(b) >= 8 {
		s += uint64(binary.BigEndian.Uint32(b[0:4])) + uint64(binary.BigEndian.Uint32(b[4:8]))
		b = b[8:]
	}
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	// Fold 32-bit word sums down to a 16-bit-word-compatible value.
	for s>>32 != 0 {
		s = (s & 0xffffffff) + (s >> 32)
	}
	return foldTo32(s)
}

// foldTo32 reduces a one's-complement accumulator so that it fits in 32 bits
// while staying congruent modulo 0xffff.
func foldTo32(s uint64) uint32 {
	s = (s & 0xffff) + (s >> 16)
	s = (s & 0xffff) + (s >> 16)
	return uint32(s)
}

// fold reduces a one's-complement accumulator to 16 bits.
func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = (s & 0xffff) + (s >> 16)
	}
	return uint16(s)
}
