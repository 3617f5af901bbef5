package packet

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	mac1 = net.HardwareAddr{0, 1, 2, 3, 4, 5}
	mac2 = net.HardwareAddr{0, 1, 2, 3, 4, 6}
	v4a  = net.IP{10, 0, 0, 1}
	v4b  = net.IP{10, 0, 0, 2}
	v6a  = net.ParseIP("2001:db8::1")
	v6b  = net.ParseIP("2001:db8::2")
)

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func tcpLayer(ip gopacket.NetworkLayer) *layers.TCP {
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: 12345, Ack: 678, PSH: true, ACK: true, Window: 100, DataOffset: 5}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	return tcp
}

func ipv4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: v4a, DstIP: v4b}
}

func ipv6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: v6a, DstIP: v6b}
}

var payload = gopacket.Payload("GET / HTTP/1.1\r\n\r\n")

func TestDecode(t *testing.T) {
	ip4 := ipv4(layers.IPProtocolTCP)
	v4tcp := serialize(t, ip4, tcpLayer(ip4), payload)
	ip6 := ipv6(layers.IPProtocolTCP)
	v6tcp := serialize(t, ip6, tcpLayer(ip6), payload)
	eth := func(et layers.EthernetType) *layers.Ethernet {
		return &layers.Ethernet{SrcMAC: mac1, DstMAC: mac2, EthernetType: et}
	}
	// IPv6 with a hop-by-hop header (8 bytes: next=TCP, len=0, PadN).
	ip6h := ipv6(layers.IPProtocolIPv6HopByHop)
	tcp6h := serialize(t, tcpLayer(ip6), payload)
	v6hop := serialize(t, ip6h, gopacket.Payload(append([]byte{6, 0, 1, 4, 0, 0, 0, 0}, tcp6h...)))
	ip6f := ipv6(layers.IPProtocolIPv6Fragment)
	v6frag := serialize(t, ip6f, gopacket.Payload([]byte{6, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4}))
	frag := ipv4(layers.IPProtocolTCP)
	frag.Flags = layers.IPv4MoreFragments
	v4frag := serialize(t, frag, gopacket.Payload(v4tcp[20:]))
	udp4 := ipv4(layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: 53, DstPort: 53}
	_ = udp.SetNetworkLayerForChecksum(udp4)
	v4udp := serialize(t, udp4, udp, gopacket.Payload("x"))

	sll := func(proto uint16, ip []byte) []byte {
		h := make([]byte, 16)
		binary.BigEndian.PutUint16(h[14:], proto)
		return append(h, ip...)
	}
	sll2 := func(proto uint16, ip []byte) []byte {
		h := make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], proto)
		return append(h, ip...)
	}
	null := func(af uint32, order binary.ByteOrder, ip []byte) []byte {
		h := make([]byte, 4)
		order.PutUint32(h, af)
		return append(h, ip...)
	}
	tests := []struct {
		name string
		lt   layers.LinkType
		data []byte
		want Result
		v6   bool
	}{
		{"ethernet ipv4", layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv4), ip4, tcpLayer(ip4), payload), TCP, false},
		{"ethernet ipv4 with padding trailer", layers.LinkTypeEthernet, append(serialize(t, eth(layers.EthernetTypeIPv4), ip4, tcpLayer(ip4), payload), 0, 0, 0, 0), TCP, false},
		{"ethernet ipv6", layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv6), ip6, tcpLayer(ip6), payload), TCP, true},
		{"802.1Q", layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4}, ip4, tcpLayer(ip4), payload), TCP, false},
		{"QinQ", layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 8, Type: layers.EthernetTypeIPv6}, ip6, tcpLayer(ip6), payload), TCP, true},
		{"ethernet hop-by-hop", layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv6), gopacket.Payload(v6hop)), TCP, true},
		{"ethernet ARP", layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeARP), gopacket.Payload(make([]byte, 28))), NotTCP, false},
		{"ethernet UDP", layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv4), gopacket.Payload(v4udp)), NotTCP, false},
		{"ethernet truncated", layers.LinkTypeEthernet, []byte{1, 2, 3}, Malformed, false},
		{"ipv4 cut by snaplen inside the TCP header", layers.LinkTypeRaw, v4tcp[:30], Malformed, false},
		{"ipv6 cut by snaplen inside the TCP header", layers.LinkTypeRaw, v6tcp[:50], Malformed, true},
		{"ipv4 fragment", layers.LinkTypeRaw, v4frag, Fragment, false},
		{"ipv6 fragment", layers.LinkTypeRaw, v6frag, Fragment, true},
		{"linux SLL", layers.LinkTypeLinuxSLL, sll(0x0800, v4tcp), TCP, false},
		{"linux SLL2 ipv6", layers.LinkTypeLinuxSLL2, sll2(0x86DD, v6tcp), TCP, true},
		{"null little endian AF_INET", layers.LinkTypeNull, null(2, binary.LittleEndian, v4tcp), TCP, false},
		{"null big endian AF_INET6 (darwin)", layers.LinkTypeNull, null(30, binary.BigEndian, v6tcp), TCP, true},
		{"loop AF_INET", layers.LinkTypeLoop, null(2, binary.BigEndian, v4tcp), TCP, false},
		{"raw ipv4", layers.LinkTypeRaw, v4tcp, TCP, false},
		{"raw ipv6 (LINKTYPE_IPV6)", layers.LinkTypeIPv6, v6tcp, TCP, true},
		{"raw garbage", layers.LinkTypeRaw, []byte{0x99, 1, 2}, Malformed, false},
		{"bad tcp data offset", layers.LinkTypeRaw, func() []byte { b := append([]byte(nil), v4tcp...); b[20+12] = 0xF0; return b }(), Malformed, false},
		{"unsupported link", layers.LinkTypeIEEE802_11, v4tcp, UnsupportedLink, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Segment
			got := Decode(tt.lt, tt.data, &s)
			if got != tt.want {
				t.Fatalf("Decode = %v, want %v", got, tt.want)
			}
			if got != TCP {
				return
			}
			if s.IPv6 != tt.v6 || s.SrcPort != 40000 || s.DstPort != 80 || s.Seq != 12345 || s.Ack != 678 ||
				!s.Flags.Has(PSH|ACK) || s.Flags.Has(SYN) || string(s.Payload) != string(payload) {
				t.Fatalf("got %+v", s)
			}
			src, dst := net.IP(s.Src[:]), net.IP(s.Dst[:])
			if tt.v6 && (!src.Equal(v6a) || !dst.Equal(v6b)) || !tt.v6 && (!src.Equal(v4a) || !dst.Equal(v4b)) {
				t.Fatalf("addresses %v -> %v", src, dst)
			}
		})
	}
}

// TestDecodeSnaplen: a frame cut inside the payload still decodes, and
// says how many payload bytes are missing.
func TestDecodeSnaplen(t *testing.T) {
	ip4, ip6 := ipv4(layers.IPProtocolTCP), ipv6(layers.IPProtocolTCP)
	for _, tt := range []struct {
		name  string
		frame []byte
	}{
		{"ipv4", serialize(t, ip4, tcpLayer(ip4), payload)},
		{"ipv6", serialize(t, ip6, tcpLayer(ip6), payload)},
	} {
		var s Segment
		cut := tt.frame[:len(tt.frame)-7]
		if r := Decode(layers.LinkTypeRaw, cut, &s); r != TCP || s.Truncated != 7 || string(s.Payload) != string(payload[:len(payload)-7]) {
			t.Errorf("%s: %v truncated %d payload %q", tt.name, r, s.Truncated, s.Payload)
		}
		if Decode(layers.LinkTypeRaw, tt.frame, &s); s.Truncated != 0 {
			t.Errorf("%s: whole frame truncated %d", tt.name, s.Truncated)
		}
	}
}

func TestDecodeNoAlloc(t *testing.T) {
	ip4 := ipv4(layers.IPProtocolTCP)
	frame := serialize(t, &layers.Ethernet{SrcMAC: mac1, DstMAC: mac2, EthernetType: layers.EthernetTypeIPv4}, ip4, tcpLayer(ip4), payload)
	var s Segment
	if n := testing.AllocsPerRun(100, func() { Decode(layers.LinkTypeEthernet, frame, &s) }); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

func BenchmarkDecode(b *testing.B) {
	ip4 := ipv4(layers.IPProtocolTCP)
	buf := gopacket.NewSerializeBuffer()
	_ = gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, &layers.Ethernet{SrcMAC: mac1, DstMAC: mac2, EthernetType: layers.EthernetTypeIPv4}, ip4, tcpLayer(ip4), payload)
	frame := buf.Bytes()
	var s Segment
	b.ReportAllocs()
	for b.Loop() {
		Decode(layers.LinkTypeEthernet, frame, &s)
	}
}

// FuzzDecode: Decode never panics and a TCP payload lies inside the frame.
func FuzzDecode(f *testing.F) {
	f.Add(uint16(layers.LinkTypeEthernet), []byte{})
	ip4, ip6 := ipv4(layers.IPProtocolTCP), ipv6(layers.IPProtocolTCP)
	for _, ls := range [][]gopacket.SerializableLayer{
		{&layers.Ethernet{SrcMAC: mac1, DstMAC: mac2, EthernetType: layers.EthernetTypeIPv4}, ip4, tcpLayer(ip4), payload},
		{&layers.Ethernet{SrcMAC: mac1, DstMAC: mac2, EthernetType: layers.EthernetTypeDot1Q}, &layers.Dot1Q{Type: layers.EthernetTypeIPv6}, ip6, tcpLayer(ip6), payload},
	} {
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err == nil {
			f.Add(uint16(layers.LinkTypeEthernet), append([]byte(nil), buf.Bytes()...))
		}
	}
	f.Fuzz(func(t *testing.T, lt uint16, data []byte) {
		var s Segment
		if Decode(layers.LinkType(lt), data, &s) == TCP && len(s.Payload) > len(data) {
			t.Fatalf("payload longer than frame")
		}
	})
}
