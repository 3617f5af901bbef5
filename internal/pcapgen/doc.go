// Package pcapgen generates synthetic network captures for tests and
// benchmarks: classic pcap files (nanosecond timestamps, Ethernet) holding
// IPv4 or IPv6 TCP connections with valid checksums, realistic sequence and
// acknowledgement numbers, optional impairments (reordering, spurious
// retransmissions, capture loss), and HTTP/1.1 exchanges whose ground truth
// is returned as Truth values.
//
// Small captures are built connection by connection and sorted by time at
// Flush; large ones are streamed with Interleave, FlushUntil or
// GenerateHTTP. Fixtures returns the project's fixtures in testdata/pcaps.
package pcapgen
