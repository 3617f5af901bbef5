//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package procstat

import (
	"errors"
	"time"
)

// cpuTime is not implemented on this platform.
func cpuTime() (time.Duration, error) {
	return 0, errors.New("process cpu time: not supported on this platform")
}
