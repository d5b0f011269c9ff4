package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
)

// TestSIGTERM stops a worker process in the middle of its tasks. Flows
// that end within the grace period finish on it; the others are handed
// back and finish on another worker. Either way the process exits 0.
func TestSIGTERM(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	tests := []struct {
		name  string
		grace time.Duration
		sleep int // ms each task's flow takes
		// handedBack: the tasks outlive the grace period and finish on
		// a second worker.
		handedBack bool
	}{
		{name: "running flows finish within the grace period", grace: time.Minute, sleep: 2000},
		{name: "flows past the grace period are handed back", grace: 200 * time.Millisecond, sleep: 3000, handedBack: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newTestQueue(t, srv)
			// A lease far longer than the test's waits: a task that
			// finishes on the second worker was handed back, not
			// reclaimed after its lease.
			const lease = 10 * time.Minute
			args := q.workerArgs("-concurrency", "4", "-lease", lease.String(), "-grace", tt.grace.String())
			first := startWorker(t, srv.URL(), args...)
			ids := q.enqueueSleeps(t, []int{tt.sleep, tt.sleep, tt.sleep})
			q.waitRunning(t, ids, 30*time.Second)

			require.Equal(t, 0, first.terminate(30*time.Second), "exit status after SIGTERM")
			assert.Contains(t, first.logTail(20), "a second signal ends the worker at once", "the worker did not log the start of its shutdown")
			finisher := first
			if tt.handedBack {
				assert.Len(t, q.unfinished(t, ids), len(ids), "tasks past the grace period ended on the stopped worker")
				finisher = startWorker(t, srv.URL(), args...)
			}
			q.waitFinished(t, ids, 30*time.Second, nil)
			for _, id := range ids {
				out := q.checkSucceededOnce(t, id)
				assert.Equal(t, finisher.pid(), out.Result.PID, "task %s ran on the wrong process", id)
				wantAttempt := 1
				if tt.handedBack {
					wantAttempt = 2
				}
				assert.Equal(t, wantAttempt, out.Result.Attempt, "task %s: attempt of the successful run", id)
				assert.Equal(t, wantAttempt, out.Starts, "task %s: runs started", id)
			}
			if tt.handedBack {
				assert.Equal(t, 0, finisher.terminate(30*time.Second), "exit status of the second worker")
			}
		})
	}
}
