package store_test

import (
	"context"
	"testing"
	"time"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

func TestPruneHeartbeats(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	now := time.Now().UTC()
	old := now.AddDate(0, 0, -10)
	if err := s.EnsurePartitions(ctx, old); err != nil { // daily partitions around 10 days ago
		t.Fatal(err)
	}
	for _, at := range []time.Time{old, now.AddDate(0, 0, -30), now.AddDate(0, 0, -6), now} {
		if err := s.InsertHeartbeat(ctx, agentA, &orbweaverv1.Heartbeat{Packets: 1}, at); err != nil {
			t.Fatal(err)
		}
	}
	s.SetHeartbeatRetention(7 * 24 * time.Hour)
	if err := s.Prune(ctx, now); err != nil {
		t.Fatal(err)
	}
	equalStrings(t, "heartbeats kept",
		queryStrings(t, s, "SELECT (time > now() - interval '8 days')::text FROM agent_heartbeats ORDER BY time"),
		[]string{"true", "true"})
	equalStrings(t, "old partition dropped",
		queryStrings(t, s, "SELECT count(*)::text FROM pg_class WHERE relname = $1", "agent_heartbeats_p"+old.Format("20060102")),
		[]string{"0"})
}
