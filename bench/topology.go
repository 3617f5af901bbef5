package main

import (
	"math/rand/v2"
	"net/netip"
)

// topology is who calls whom in the generated traffic (queries and ingest
// sections), shaped like a service mesh: 50 servers (10.10.0.1–50, one
// port each) and 500 client pods (10.20.0.0/16) that are the replicas, five
// each, of 100 calling services. Every calling service and every server
// has a fixed set of three dependencies among the servers, popular servers
// being the dependencies of more services; a pod calls only its service's
// dependencies, as pods do. (Each client calling every server at random
// would make 27,500 edges an hour, every one a few calls: a service map
// nobody has.)
type topology struct {
	servers []netip.Addr
	clients []netip.Addr
	// clientDeps[c] and serverDeps[s] are the servers client pod c and
	// server s call.
	clientDeps, serverDeps [][3]int
}

const (
	topoServers  = 50
	topoClients  = 500
	topoReplicas = 5
)

func newTopology() *topology {
	rng := rand.New(rand.NewPCG(42, 43)) // the same mesh in every run
	t := &topology{}
	for i := range topoServers {
		t.servers = append(t.servers, netip.AddrFrom4([4]byte{10, 10, 0, byte(1 + i)}))
	}
	for i := range topoClients {
		t.clients = append(t.clients, netip.AddrFrom4([4]byte{10, 20, byte(i / 250), byte(1 + i%250)}))
	}
	deps := func(self int) [3]int {
		var d [3]int
		for k := 0; k < 3; {
			// Skewed popularity: low-numbered servers are called by more.
			s := int(float64(topoServers) * rng.Float64() * rng.Float64())
			if s == self || (k > 0 && (s == d[0] || (k > 1 && s == d[1]))) {
				continue
			}
			d[k] = s
			k++
		}
		return d
	}
	services := make([][3]int, topoClients/topoReplicas)
	for i := range services {
		services[i] = deps(-1)
	}
	for c := range topoClients {
		t.clientDeps = append(t.clientDeps, services[c/topoReplicas])
	}
	for s := range topoServers {
		t.serverDeps = append(t.serverDeps, deps(s))
	}
	return t
}

// clientCall picks a client pod and one of its dependencies.
func (t *topology) clientCall(rng *rand.Rand) (client netip.Addr, server int) {
	c := rng.IntN(topoClients)
	return t.clients[c], t.clientDeps[c][rng.IntN(3)]
}

// serverCall picks a dependency of server s.
func (t *topology) serverCall(rng *rand.Rand, s int) int {
	return t.serverDeps[s][rng.IntN(3)]
}

// clientEdges returns the (client pod index, server) pairs of the calls of
// client pods to the servers keep accepts.
func (t *topology) clientEdges(keep func(server int) bool) [][2]int {
	var edges [][2]int
	for c, deps := range t.clientDeps {
		for _, s := range deps {
			if keep(s) {
				edges = append(edges, [2]int{c, s})
			}
		}
	}
	return edges
}
