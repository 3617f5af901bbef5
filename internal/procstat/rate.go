package procstat

import "time"

// Rate turns a cumulative counter into a per-second rate between
// consecutive updates. The zero value is ready to use. It is not safe for
// concurrent use.
type Rate struct {
	last     uint64
	lastTime time.Time
	primed   bool
}

// Update records total at now and returns the per-second increase since
// the previous Update. It returns 0 on the first update; when total went
// down (a counter reset), it returns 0 and total becomes the new base. An
// update whose now is not after the previous one returns 0 and is ignored,
// so the increase is counted at the next update.
func (r *Rate) Update(total uint64, now time.Time) float64 {
	if !r.primed || total < r.last {
		r.last, r.lastTime, r.primed = total, now, true
		return 0
	}
	dt := now.Sub(r.lastTime)
	if dt <= 0 {
		return 0
	}
	v := float64(total-r.last) / dt.Seconds()
	r.last, r.lastTime = total, now
	return v
}
