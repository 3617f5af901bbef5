package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// BenchmarkInsertCallBatch stores 1000-call batches, by one writer and by
// four concurrent writers (as several agent streams do), and reports rows/s.
// Postgres runs on the same machine, fsync on.
func BenchmarkInsertCallBatch(b *testing.B) {
	const batchSize = 1000
	s := open(b)
	now := time.Now()
	calls := make([]*orbweaverv1.HttpCall, batchSize)
	for i := range calls {
		start := now.Add(time.Duration(i) * time.Millisecond).UnixNano()
		calls[i] = &orbweaverv1.HttpCall{
			ClientIp: []byte{10, 0, byte(i >> 8), byte(i)}, ClientPort: uint32(30000 + i), ServerIp: []byte{10, 1, 0, 1}, ServerPort: 8080,
			RequestStartNs: start, RequestEndNs: start + 50_000, ResponseStartNs: start + 900_000, ResponseEndNs: start + 1_000_000,
			Method: "GET", Host: "orders.default.svc:8080", Path: fmt.Sprintf("/api/v1/orders/%d", i), Query: "expand=items&limit=20",
			HttpVersion: "1.1", Status: 200, RequestHeaderSize: 412, ResponseHeaderSize: 230, ResponseBodySize: 1834,
			ResponseContentType: "application/json", UserAgent: "Go-http-client/1.1",
			XRequestId:  uuid.NewString(),
			Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ParseStatus: "ok",
		}
	}
	for _, writers := range []int{1, 4} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			ctx := context.Background()
			boot := uuid.NewString()
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			b.ResetTimer()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < b.N; i += writers {
						batch := &orbweaverv1.CallBatch{AgentId: testAgent, BootId: boot, Sequence: uint64(i + 1), HttpCalls: calls}
						if _, err := s.InsertCallBatch(ctx, batch); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
