package agent

import (
	"testing"

	"github.com/orbweaver/orbweaver/agent/pipeline"
	"github.com/orbweaver/orbweaver/internal/agentconfig"
)

func TestDerivedMemoryLimit(t *testing.T) {
	tests := []struct {
		name  string
		pc    pipeline.Config
		queue uint64 // shipping.queue_max_bytes; 0: the default
		want  int64
	}{
		{name: "defaults", want: 192 << 20},
		{name: "configured", pc: pipeline.Config{MaxTotalBufferBytes: 128 << 20}, queue: 32 << 20, want: (128 + 32 + 64) << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := agentconfig.Default()
			if tt.queue != 0 {
				conf.Shipping.QueueMaxBytes = tt.queue
			}
			if got := derivedMemoryLimit(tt.pc, conf); got != tt.want {
				t.Errorf("limit %d MiB, want %d MiB", got>>20, tt.want>>20)
			}
		})
	}
}
