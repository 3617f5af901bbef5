// Package packet is a flat, allocation-free decoder from captured link-layer
// frames to the TCP fields that reassembly needs. It understands Ethernet
// (with 802.1Q / 802.1ad / QinQ tags), Linux cooked capture SLL and SLL2,
// BSD Null / Loopback, and raw IPv4 / IPv6, on top of which IPv4 and IPv6
// (hop-by-hop, routing, destination-options and AH extension headers skipped)
// carrying TCP.
//
// It deliberately avoids gopacket's generic layer machinery: Decode touches
// only the bytes it needs and never allocates. It is safe for concurrent use
// (it has no state); the TCP value it fills belongs to the caller.
package packet

import (
	"encoding/binary"

	"github.com/gopacket/gopacket/layers"
)

// Result tells what Decode found in a frame.
type Result uint8

const (
	// TCP: the frame carries a TCP segment; the TCP value is filled.
	TCP Result = iota
	// NotTCP: a well-formed frame that carries something else (ARP, UDP,
	// ICMP, an unknown EtherType...).
	NotTCP
	// Fragment: an IPv4 or IPv6 fragment. Fragments are not reassembled.
	Fragment
	// Malformed: the frame is truncated or inconsistent.
	Malformed
	// UnsupportedLink: the link type is not one this package decodes.
	UnsupportedLink
)

// String returns a short name for r.
func (r Result) String() string {
	switch r {
	case TCP:
		return "tcp"
	case NotTCP:
		return "not_tcp"
	case Fragment:
		return "fragment"
	case Malformed:
		return "malformed"
	case UnsupportedLink:
		return "unsupported_link"
	}
	return "unknown"
}

// Flags are the TCP header flags, with the bit values of the TCP header.
type Flags uint8

// TCP flag bits.
const (
	FIN Flags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

// Has reports whether all bits of f2 are set in f.
func (f Flags) Has(f2 Flags) bool { return f&f2 == f2 }

// Segment is the decoded view of one TCP segment. Addresses are 16 bytes;
// IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d) so that the value is
// fixed-size and comparable. Payload aliases the frame passed to Decode.
type Segment struct {
	Src, Dst         [16]byte
	IPv6             bool
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            Flags
	Payload          []byte
	// Truncated is the number of payload bytes missing from the frame
	// because the capture cut it (snap length). Payload holds the rest.
	Truncated int
}

// EtherTypes and protocol numbers used by the decoder.
const (
	etherIPv4   = 0x0800
	etherIPv6   = 0x86DD
	etherVLAN   = 0x8100
	etherQinQ   = 0x88A8
	etherQinQv1 = 0x9100

	ipProtoTCP      = 6
	ipProtoHopOpts  = 0
	ipProtoRouting  = 43
	ipProtoFragment = 44
	ipProtoAH       = 51
	ipProtoDstOpts  = 60

	maxVLANTags   = 8
	maxIPv6ExtHdr = 8
)

// Decode decodes one frame of the given link type into s. s is fully
// overwritten only when the result is TCP. Decode never panics and never
// allocates.
func Decode(lt layers.LinkType, data []byte, s *Segment) Result {
	switch lt {
	case layers.LinkTypeEthernet:
		return decodeEthernet(data, s)
	case layers.LinkTypeLinuxSLL:
		if len(data) < 16 {
			return Malformed
		}
		return decodeEtherType(binary.BigEndian.Uint16(data[14:16]), data[16:], s)
	case layers.LinkTypeLinuxSLL2:
		if len(data) < 20 {
			return Malformed
		}
		return decodeEtherType(binary.BigEndian.Uint16(data[0:2]), data[20:], s)
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		return decodeNull(lt, data, s)
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6, 12, 14:
		// 12 and 14 are DLT_RAW on some BSDs, written as-is by some tools.
		return decodeIP(data, s)
	}
	return UnsupportedLink
}

func decodeEthernet(data []byte, s *Segment) Result {
	if len(data) < 14 {
		return Malformed
	}
	return decodeEtherType(binary.BigEndian.Uint16(data[12:14]), data[14:], s)
}

// decodeEtherType follows VLAN tags then dispatches on the EtherType.
func decodeEtherType(et uint16, data []byte, s *Segment) Result {
	for i := 0; et == etherVLAN || et == etherQinQ || et == etherQinQv1; i++ {
		if i == maxVLANTags || len(data) < 4 {
			return Malformed
		}
		et = binary.BigEndian.Uint16(data[2:4])
		data = data[4:]
	}
	switch et {
	case etherIPv4:
		return decodeIPv4(data, s)
	case etherIPv6:
		return decodeIPv6(data, s)
	}
	return NotTCP
}

// decodeNull handles the 4-byte address-family header of DLT_NULL (host byte
// order of the capturing machine, so both orders are accepted) and DLT_LOOP
// (network byte order).
func decodeNull(lt layers.LinkType, data []byte, s *Segment) Result {
	if len(data) < 4 {
		return Malformed
	}
	af := binary.BigEndian.Uint32(data[:4])
	if lt == layers.LinkTypeNull && af > 0xFFFF {
		af = binary.LittleEndian.Uint32(data[:4])
	}
	data = data[4:]
	switch af {
	case 2: // AF_INET everywhere
		return decodeIPv4(data, s)
	case 10, 24, 28, 30: // AF_INET6: Linux, NetBSD/OpenBSD, FreeBSD, Darwin
		return decodeIPv6(data, s)
	}
	return NotTCP
}

func decodeIP(data []byte, s *Segment) Result {
	if len(data) < 1 {
		return Malformed
	}
	switch data[0] >> 4 {
	case 4:
		return decodeIPv4(data, s)
	case 6:
		return decodeIPv6(data, s)
	}
	return Malformed
}

func decodeIPv4(data []byte, s *Segment) Result {
	if len(data) < 20 || data[0]>>4 != 4 {
		return Malformed
	}
	ihl := int(data[0]&0x0F) * 4
	total := int(binary.BigEndian.Uint16(data[2:4]))
	if ihl < 20 || total < ihl || ihl > len(data) {
		return Malformed
	}
	cut := 0
	if total > len(data) {
		// Cut by the snap length: the missing bytes are reported.
		cut, total = total-len(data), len(data)
	}
	fragField := binary.BigEndian.Uint16(data[6:8])
	if fragField&0x2000 != 0 || fragField&0x1FFF != 0 {
		return Fragment
	}
	if data[9] != ipProtoTCP {
		return NotTCP
	}
	s.Src = [16]byte{10: 0xFF, 11: 0xFF, 12: data[12], 13: data[13], 14: data[14], 15: data[15]}
	s.Dst = [16]byte{10: 0xFF, 11: 0xFF, 12: data[16], 13: data[17], 14: data[18], 15: data[19]}
	s.IPv6 = false
	s.Truncated = cut
	return decodeTCP(data[ihl:total], s)
}

func decodeIPv6(data []byte, s *Segment) Result {
	if len(data) < 40 || data[0]>>4 != 6 {
		return Malformed
	}
	plen := int(binary.BigEndian.Uint16(data[4:6]))
	if plen == 0 {
		// A jumbogram (not supported) or an empty packet.
		return Malformed
	}
	cut := 0
	if 40+plen > len(data) {
		// Cut by the snap length: the missing bytes are reported.
		cut, plen = 40+plen-len(data), len(data)-40
	}
	next := data[6]
	copy(s.Src[:], data[8:24])
	copy(s.Dst[:], data[24:40])
	p := data[40 : 40+plen]
	for i := 0; ; i++ {
		switch next {
		case ipProtoTCP:
			s.IPv6 = true
			s.Truncated = cut
			return decodeTCP(p, s)
		case ipProtoFragment:
			return Fragment
		case ipProtoHopOpts, ipProtoRouting, ipProtoDstOpts, ipProtoAH:
			if i == maxIPv6ExtHdr || len(p) < 8 {
				return Malformed
			}
			n := (int(p[1]) + 1) * 8
			if next == ipProtoAH {
				n = (int(p[1]) + 2) * 4
			}
			if n > len(p) {
				return Malformed
			}
			next = p[0]
			p = p[n:]
		default:
			return NotTCP
		}
	}
}

func decodeTCP(data []byte, s *Segment) Result {
	if len(data) < 20 {
		return Malformed
	}
	off := int(data[12]>>4) * 4
	if off < 20 || off > len(data) {
		return Malformed
	}
	s.SrcPort = binary.BigEndian.Uint16(data[0:2])
	s.DstPort = binary.BigEndian.Uint16(data[2:4])
	s.Seq = binary.BigEndian.Uint32(data[4:8])
	s.Ack = binary.BigEndian.Uint32(data[8:12])
	s.Flags = Flags(data[13])
	s.Payload = data[off:]
	return TCP
}
