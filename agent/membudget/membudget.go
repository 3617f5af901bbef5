// Package membudget defines the memory budget that the decode path's
// packages (reassembly, decode/http1) charge what they hold to, so that one
// owner (the pipeline) can bound all of it together, and two simple budgets:
// Unlimited, and Limit, a fixed cap that never makes room.
package membudget

// Budget accounts memory, shared by everything charged to it.
type Budget interface {
	// Reserve charges n bytes and reports whether they fit. It may make
	// room by releasing memory held elsewhere, but never by calling back
	// into the caller that asks.
	Reserve(n int64) bool
	// Release returns n bytes charged earlier.
	Release(n int64)
}

// Unlimited is a Budget that accepts every charge.
var Unlimited Budget = unlimited{}

type unlimited struct{}

func (unlimited) Reserve(int64) bool { return true }
func (unlimited) Release(int64)      {}

// Limit is a Budget of a fixed number of bytes that never makes room. It is
// not safe for concurrent use.
type Limit struct{ max, used int64 }

// NewLimit returns a Limit of max bytes.
func NewLimit(max int64) *Limit { return &Limit{max: max} }

// Reserve implements Budget.
func (l *Limit) Reserve(n int64) bool {
	if l.used+n > l.max {
		return false
	}
	l.used += n
	return true
}

// Release implements Budget. Releasing more than was reserved is a bug in
// the caller's accounting, and panics.
func (l *Limit) Release(n int64) {
	l.used -= n
	if l.used < 0 {
		panic("membudget: released more than reserved")
	}
}

// Used returns the bytes charged now.
func (l *Limit) Used() int64 { return l.used }

// Max returns the limit.
func (l *Limit) Max() int64 { return l.max }
