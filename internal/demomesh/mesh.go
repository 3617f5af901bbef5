// Package demomesh runs a small mesh of HTTP services on loopback addresses
// that call each other, and a load generator for it, so that a local agent
// capturing on lo has realistic calls to show at once.
//
// The mesh is four services, each on its own loopback IP so that the
// service map shows four nodes:
//
//	frontend  127.0.0.2  GET /api/orders/{id}, GET /api/catalog (chunked)
//	orders    127.0.0.3  GET /orders/{id}
//	inventory 127.0.0.4  GET /items/{sku}?warehouse=...
//	payments  127.0.0.5  POST /payments
//
// Services call each other from their own IP with keep-alive clients and
// propagate traceparent and x-request-id headers.
package demomesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBasePort is the port of the frontend when Config sets no port; the
// other services follow at +1, +2 and +3.
const DefaultBasePort = 18080

// Service names, in the order of Mesh.Services and Mesh.Ports.
const (
	Frontend  = "frontend"
	Orders    = "orders"
	Inventory = "inventory"
	Payments  = "payments"
)

// serviceIPs are the loopback IPs of the services, in service order.
var serviceIPs = [...]string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}

// Config configures a mesh. The zero value listens on DefaultBasePort+0..3
// and discards logs.
type Config struct {
	// BasePort is the frontend's port; the other services use BasePort+1..3.
	// 0 means DefaultBasePort. Ignored when Ports is set.
	BasePort int
	// Ports, when set, holds one port per service in the order frontend,
	// orders, inventory, payments; a 0 entry picks a free port.
	Ports []int
	// Logger receives the services' logs (one debug line per request);
	// nil discards them.
	Logger *slog.Logger
}

// Service is one service of the mesh.
type Service struct {
	Name string
	// Addr is the listening address, e.g. "127.0.0.2:18080".
	Addr string
}

// Mesh is a running set of demo services. Its methods are safe for
// concurrent use; Close stops it.
type Mesh struct {
	log      *slog.Logger
	services []*service

	serveWG  sync.WaitGroup
	serveErr chan error // one slot per service

	closeOnce sync.Once
	closeErr  error
}

// service is one HTTP server of the mesh with its outbound client.
type service struct {
	name   string
	ip     net.IP
	addr   string // actual listening address
	ln     net.Listener
	srv    *http.Server
	client *http.Client // calls to other services, from ip
	served atomic.Int64
}

// Start binds the four services on their loopback IPs and serves them. It
// returns once all of them listen; ctx bounds only the start-up, stop the
// mesh with Close.
func Start(ctx context.Context, cfg Config) (*Mesh, error) {
	ports, err := resolvePorts(cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Mesh{log: log, serveErr: make(chan error, len(serviceIPs))}

	names := [...]string{Frontend, Orders, Inventory, Payments}
	var lc net.ListenConfig
	for i, name := range names {
		addr := net.JoinHostPort(serviceIPs[i], strconv.Itoa(ports[i]))
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			for _, s := range m.services {
				s.ln.Close()
			}
			return nil, fmt.Errorf("listen %s on %s: %w", name, addr, err)
		}
		ip := net.ParseIP(serviceIPs[i])
		m.services = append(m.services, &service{
			name:   name,
			ip:     ip,
			addr:   ln.Addr().String(),
			ln:     ln,
			client: &http.Client{Transport: newTransport(ip), Timeout: 5 * time.Second},
		})
	}

	h := &handlers{
		log:       log,
		orders:    "http://" + m.services[1].addr,
		inventory: "http://" + m.services[2].addr,
		payments:  "http://" + m.services[3].addr,
	}
	muxes := [...]http.Handler{
		withRequestID(h.frontendMux(m.services[0])),
		h.ordersMux(m.services[1]),
		h.inventoryMux(m.services[2]),
		h.paymentsMux(m.services[3]),
	}
	for i, s := range m.services {
		s.srv = &http.Server{
			Handler:           logRequests(log, s, muxes[i]),
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       60 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		m.serveWG.Add(1)
		go func() {
			defer m.serveWG.Done()
			if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("demo service stopped", "service", s.name, "err", err)
				m.serveErr <- fmt.Errorf("serve %s: %w", s.name, err)
			}
		}()
		log.Info("demo service listening", "service", s.name, "addr", s.addr)
	}
	return m, nil
}

func resolvePorts(cfg Config) ([]int, error) {
	if cfg.Ports != nil {
		if len(cfg.Ports) != len(serviceIPs) {
			return nil, fmt.Errorf("ports: want %d (frontend, orders, inventory, payments), got %d", len(serviceIPs), len(cfg.Ports))
		}
		for i, p := range cfg.Ports {
			if p < 0 || p > 65535 {
				return nil, fmt.Errorf("ports[%d]: %d out of range", i, p)
			}
		}
		return cfg.Ports, nil
	}
	base := cfg.BasePort
	if base == 0 {
		base = DefaultBasePort
	}
	if base < 1 || base+len(serviceIPs)-1 > 65535 {
		return nil, fmt.Errorf("base port: %d out of range", cfg.BasePort)
	}
	ports := make([]int, len(serviceIPs))
	for i := range ports {
		ports[i] = base + i
	}
	return ports, nil
}

// newTransport returns a keep-alive HTTP/1.1 transport whose connections
// come from local.
func newTransport(local net.IP) *http.Transport {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
}

// Services returns the services in the order frontend, orders, inventory,
// payments.
func (m *Mesh) Services() []Service {
	out := make([]Service, len(m.services))
	for i, s := range m.services {
		out[i] = Service{Name: s.name, Addr: s.addr}
	}
	return out
}

// Ports returns the services' listening ports, in service order.
func (m *Mesh) Ports() []int {
	out := make([]int, len(m.services))
	for i, s := range m.services {
		out[i] = s.ln.Addr().(*net.TCPAddr).Port
	}
	return out
}

// BPFFilter returns a filter matching the mesh's traffic, of the form
// "tcp and (port A or port B ...)".
func (m *Mesh) BPFFilter() string {
	var b strings.Builder
	b.WriteString("tcp and (")
	for i, p := range m.Ports() {
		if i > 0 {
			b.WriteString(" or ")
		}
		fmt.Fprintf(&b, "port %d", p)
	}
	b.WriteString(")")
	return b.String()
}

// Served returns how many requests each service has answered, by service
// name.
func (m *Mesh) Served() map[string]int64 {
	out := make(map[string]int64, len(m.services))
	for _, s := range m.services {
		out[s.name] = s.served.Load()
	}
	return out
}

// FrontendURL returns the base URL of the frontend, e.g.
// "http://127.0.0.2:18080".
func (m *Mesh) FrontendURL() string { return "http://" + m.services[0].addr }

// Close shuts the services down gracefully, frontend first so that calls in
// flight can finish downstream, and waits for them. When ctx ends first the
// remaining connections are closed at once and ctx's error is returned.
// Close may be called more than once; later calls return the first result.
func (m *Mesh) Close(ctx context.Context) error {
	m.closeOnce.Do(func() {
		var errs []error
		for _, s := range m.services {
			if err := s.srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("shutdown %s: %w", s.name, err))
				s.srv.Close()
			}
			s.client.CloseIdleConnections()
		}
		m.serveWG.Wait()
		close(m.serveErr)
		for err := range m.serveErr {
			errs = append(errs, err)
		}
		m.closeErr = errors.Join(errs...)
		m.log.Info("demo mesh stopped", "err", m.closeErr)
	})
	return m.closeErr
}
