package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// bootFile records, in the state dir, how far the running process got: it
// is rewritten every second and at a clean exit, so that after kill -9 the
// next process can tell the controller how many calls at most were lost.
const bootFile = "last-boot.json"

type bootRecord struct {
	BootID        string    `json:"boot_id"`
	CallsCaptured uint64    `json:"calls_captured"`
	CallsAcked    uint64    `json:"calls_acked"`
	UnackedCalls  uint64    `json:"unacked_calls"`
	QueueDrops    uint64    `json:"queue_drops"`
	AsOf          time.Time `json:"as_of"`
	CleanExit     bool      `json:"clean_exit"`
}

func (r bootRecord) proto() *orbweaverv1.PreviousBoot {
	return &orbweaverv1.PreviousBoot{
		BootId:        r.BootID,
		CallsCaptured: r.CallsCaptured,
		CallsAcked:    r.CallsAcked,
		UnackedCalls:  r.UnackedCalls,
		QueueDrops:    r.QueueDrops,
		AsOfNs:        r.AsOf.UnixNano(),
		CleanExit:     r.CleanExit,
	}
}

// readBootRecord returns the previous process's record; ok is false when
// there is none.
func readBootRecord(dir string) (r bootRecord, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, bootFile))
	if errors.Is(err, fs.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("read %s: %w", bootFile, err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("decode %s: %w", bootFile, err)
	}
	return r, r.BootID != "", nil
}

// writeBootRecord replaces the record atomically.
func writeBootRecord(dir string, r bootRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, bootFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", bootFile, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", bootFile, err)
	}
	return nil
}

// bootRecordNow describes this process now.
func (a *Agent) bootRecordNow(clean bool) bootRecord {
	st := a.Stats()
	return bootRecord{
		BootID:        a.bootID,
		CallsCaptured: st.Pipeline.Calls,
		CallsAcked:    st.Uplink.CallsSent,
		UnackedCalls:  uint64(st.Uplink.UnackedCalls),
		QueueDrops:    st.Uplink.QueueDrops,
		AsOf:          time.Now().UTC(),
		CleanExit:     clean,
	}
}
