package pcapgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// pkt is one decoded TCP frame of a generated capture.
type pkt struct {
	ts       int64
	src, dst netip.AddrPort
	seq, ack uint32
	flags    byte
	payload  []byte
	raw      []byte
}

// readPcap decodes every frame of a capture with gopacket (independently of
// the generator's own serialisation) and checks the pcap header. It returns
// the frames read before any error, and the error.
func readPcap(t *testing.T, b []byte) ([]pkt, error) {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("pcap header: %w", err)
	}
	if r.LinkType() != layers.LinkTypeEthernet || r.Snaplen() != Snaplen || r.Resolution().ToDuration() != time.Nanosecond {
		return nil, fmt.Errorf("header: link %v snaplen %d resolution %v", r.LinkType(), r.Snaplen(), r.Resolution())
	}
	var out []pkt
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		if el := p.ErrorLayer(); el != nil {
			return out, fmt.Errorf("frame %d: %w", len(out)+1, el.Error())
		}
		tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			return out, fmt.Errorf("frame %d: no TCP layer", len(out)+1)
		}
		var src, dst netip.Addr
		switch ip := p.NetworkLayer().(type) {
		case *layers.IPv4:
			src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
			dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		case *layers.IPv6:
			src, _ = netip.AddrFromSlice(ip.SrcIP)
			dst, _ = netip.AddrFromSlice(ip.DstIP)
		}
		var flags byte
		for i, f := range []bool{tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH, tcp.ACK} {
			if f {
				flags |= 1 << i
			}
		}
		out = append(out, pkt{
			ts:  ci.Timestamp.UnixNano(),
			src: netip.AddrPortFrom(src, uint16(tcp.SrcPort)), dst: netip.AddrPortFrom(dst, uint16(tcp.DstPort)),
			seq: tcp.Seq, ack: tcp.Ack, flags: flags, payload: tcp.Payload, raw: data,
		})
	}
}

// flow is one direction of a connection.
type flow struct{ src, dst netip.AddrPort }

func (f flow) String() string { return f.src.String() + "->" + f.dst.String() }

// stream is the reassembled bytes of one direction.
type stream struct {
	data    []byte
	gaps    int // holes in the sequence space
	retrans int // segments seen twice
	reorder int // segments seen after a later one
}

// reassemble rebuilds each direction's byte stream by sequence number,
// checking that retransmitted bytes are identical.
func reassemble(t *testing.T, pkts []pkt) map[flow]*stream {
	t.Helper()
	type seg struct {
		seq  uint32
		data []byte
	}
	segs := map[flow][]seg{}
	isn := map[flow]uint32{}
	for _, p := range pkts {
		f := flow{p.src, p.dst}
		if p.flags&flagSYN != 0 {
			isn[f] = p.seq + 1
		}
		if len(p.payload) > 0 {
			segs[f] = append(segs[f], seg{p.seq, p.payload})
		}
	}
	out := map[flow]*stream{}
	for f, ss := range segs {
		st := &stream{}
		base, ok := isn[f]
		if !ok {
			base = ss[0].seq // mid-stream: start at the first segment seen
		}
		var maxRel uint32
		for i, s := range ss {
			if rel := s.seq - base; i > 0 && rel < maxRel {
				st.reorder++
			} else {
				maxRel = rel
			}
		}
		slices.SortStableFunc(ss, func(a, b seg) int { return int(int32(a.seq - b.seq)) })
		next := base
		for _, s := range ss {
			rel := int32(s.seq - next)
			switch {
			case rel > 0:
				st.gaps++
				st.data = append(st.data, make([]byte, rel)...)
				st.data = append(st.data, s.data...)
				next = s.seq + uint32(len(s.data))
			case rel == 0:
				st.data = append(st.data, s.data...)
				next += uint32(len(s.data))
			default:
				st.retrans++
				off := len(st.data) + int(rel)
				if off < 0 || off+len(s.data) > len(st.data) || !bytes.Equal(st.data[off:off+len(s.data)], s.data) {
					t.Errorf("flow %v: retransmission at seq %d differs from original bytes", f, s.seq)
				}
			}
		}
		out[f] = st
	}
	return out
}

// parsedExchange is an exchange decoded with net/http from reassembled
// streams.
type parsedExchange struct {
	method, uri      string
	status           int
	reqBody, resBody int
}

// parseHTTP decodes the requests of client→server bytes and the responses of
// server→client bytes with net/http.
func parseHTTP(t *testing.T, cs, sc []byte) []parsedExchange {
	t.Helper()
	var out []parsedExchange
	var reqs []*http.Request
	br := bufio.NewReader(bytes.NewReader(cs))
	for {
		req, err := http.ReadRequest(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("parse request %d: %v", len(reqs)+1, err)
		}
		n, err := io.Copy(io.Discard, req.Body)
		if err != nil {
			t.Fatalf("read request body: %v", err)
		}
		reqs = append(reqs, req)
		out = append(out, parsedExchange{method: req.Method, uri: req.RequestURI, reqBody: int(n)})
	}
	br = bufio.NewReader(bytes.NewReader(sc))
	for i := 0; ; i++ {
		if _, err := br.Peek(1); errors.Is(err, io.EOF) {
			break
		}
		if i >= len(reqs) {
			t.Fatalf("more responses than requests")
		}
		resp, err := http.ReadResponse(br, reqs[i])
		if err != nil {
			t.Fatalf("parse response %d: %v", i+1, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			t.Fatalf("read response body %d: %v", i+1, err)
		}
		if resp.Header.Get("x-request-id") != reqs[i].Header.Get("x-request-id") {
			t.Errorf("response %d: x-request-id %q, request had %q", i+1, resp.Header.Get("x-request-id"), reqs[i].Header.Get("x-request-id"))
		}
		out[i].status = resp.StatusCode
		out[i].resBody = int(n)
	}
	return out
}

// checkAgainstTruth reassembles a capture, parses it with net/http and
// compares every connection's exchanges with the truth.
func checkAgainstTruth(t *testing.T, pkts []pkt, truth []Truth) {
	t.Helper()
	checkStreams(t, reassemble(t, pkts), truth)
}

// checkStreams parses reassembled streams with net/http and compares every
// connection's exchanges with the truth.
func checkStreams(t *testing.T, streams map[flow]*stream, truth []Truth) {
	t.Helper()
	byConn := map[flow][]Truth{}
	var order []flow
	for _, tr := range truth {
		f := flow{
			netip.AddrPortFrom(netip.MustParseAddr(tr.ClientIP), uint16(tr.ClientPort)),
			netip.AddrPortFrom(netip.MustParseAddr(tr.ServerIP), uint16(tr.ServerPort)),
		}
		if _, ok := byConn[f]; !ok {
			order = append(order, f)
		}
		byConn[f] = append(byConn[f], tr)
	}
	for _, f := range order {
		cs, sc := streams[f], streams[flow{f.dst, f.src}]
		if cs == nil {
			t.Fatalf("conn %v: no client data", f)
		}
		var scData []byte
		if sc != nil {
			scData = sc.data
		}
		got := parseHTTP(t, cs.data, scData)
		want := byConn[f]
		if len(got) != len(want) {
			t.Fatalf("conn %v: parsed %d exchanges, truth has %d", f, len(got), len(want))
		}
		for i, w := range want {
			uri := w.Path
			if w.Query != "" {
				uri += "?" + w.Query
			}
			exp := parsedExchange{method: w.Method, uri: uri, status: w.Status, reqBody: w.RequestBodySize, resBody: w.ResponseBodySize}
			if got[i] != exp {
				t.Errorf("conn %v exchange %d: parsed %+v, truth %+v", f, i, got[i], exp)
			}
		}
	}
}
