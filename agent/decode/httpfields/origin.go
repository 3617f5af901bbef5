package httpfields

import (
	"net/netip"
	"unsafe"
)

// forwardedFor returns the original client address: the first entry of
// X-Forwarded-For (xff), else the "for" parameter of the first element of
// Forwarded (fwd, RFC 7239). Entries may carry a port; obfuscated
// identifiers and "unknown" are not addresses.
func forwardedFor(xff, fwd []byte) (netip.Addr, bool) {
	if xff != nil {
		first := xff
		if i := indexByte(xff, ','); i >= 0 {
			first = xff[:i]
		}
		if a, ok := parseHostAddr(trimSpace(first)); ok {
			return a, true
		}
	}
	if fwd != nil {
		elem := fwd
		if i := indexByte(fwd, ','); i >= 0 {
			elem = fwd[:i]
		}
		for len(elem) > 0 {
			pair := elem
			if i := indexByte(elem, ';'); i >= 0 {
				pair, elem = elem[:i], elem[i+1:]
			} else {
				elem = nil
			}
			pair = trimSpace(pair)
			if len(pair) > 4 && eqFold(pair[:4], "for=") {
				v := pair[4:]
				if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
				return parseHostAddr(v)
			}
		}
	}
	return netip.Addr{}, false
}

// parseHostAddr parses "ip", "ipv4:port", "[ipv6]" or "[ipv6]:port".
func parseHostAddr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	if b[0] == '[' {
		i := indexByte(b, ']')
		if i < 0 {
			return netip.Addr{}, false
		}
		b = b[1:i]
	} else if i := indexByte(b, ':'); i >= 0 && indexByte(b[i+1:], ':') < 0 {
		b = b[:i] // IPv4 with a port (an IPv6 address has several colons)
	}
	if len(b) == 0 {
		return netip.Addr{}, false
	}
	// The string does not outlive the call: ParseAddr keeps no reference
	// on success (a zone is interned by copy) and the error is dropped.
	a, err := netip.ParseAddr(unsafe.String(&b[0], len(b)))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}
