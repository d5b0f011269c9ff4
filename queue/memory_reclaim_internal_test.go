package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMemoryJudgesAfterAWindowInContact drives the Memory backend's
// heartbeats on a clock of the test's own: a worker takes back a dead
// worker's leases only once its heartbeats have come without a gap for a
// DeadAfter of its own (300 ms here: intervals of 100 ms), counted from
// its first heartbeat or from its first after a gap of more than half
// that (a heartbeat that did not get through). The dead worker's deadline
// passes 30 ms after the start; the judge's beats are given in ms from
// the start.
func TestMemoryJudgesAfterAWindowInContact(t *testing.T) {
	ghost := WorkerInfo{Name: "ghost", Heartbeat: 10 * time.Millisecond}
	judge := WorkerInfo{Name: "judge", Heartbeat: 100 * time.Millisecond}
	for _, tc := range []struct {
		name  string
		beats []int // ms from the start; the first may come before it
		taken bool
	}{
		{"a newcomer, beaten once", []int{100}, false},
		{"a newcomer, beaten for less than its window", []int{100, 200, 300, 390}, false},
		{"a newcomer, beaten for its window", []int{100, 200, 300, 400}, true},
		{"in contact since before the death", []int{-300, -200, -100, 0, 100}, true},
		{"back after a lapse of its own", []int{-1000, -900, 100, 200, 300}, false},
		{"back after a lapse, for a window", []int{-1000, -900, 100, 200, 300, 400}, true},
		{"back after a missed beat", []int{-300, -200, 0, 100, 200}, false},
		{"back after a missed beat, for a window", []int{-300, -200, 0, 100, 200, 300}, true},
		{"late, but no beat missed", []int{-300, -160, -20, 100, 200}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			m := NewMemory(MemoryConfig{})
			id := NewID()
			require.NoError(t, m.Enqueue(ctx, &Task{ID: id, Flow: "f", MaxAttempts: 3}))
			start := time.Now()
			at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }

			m.mu.Lock()
			for _, ms := range tc.beats {
				if ms <= 0 {
					m.beatDeadline(judge, at(ms))
				}
			}
			m.beatDeadline(ghost, start)
			m.mu.Unlock()
			leases, err := m.Fetch(ctx, "ghost", 1, time.Hour)
			require.NoError(t, err)
			require.Len(t, leases, 1)

			m.mu.Lock()
			defer m.mu.Unlock()
			for _, ms := range tc.beats {
				if ms > 0 {
					m.beatDeadline(judge, at(ms))
				}
			}
			mt := m.tasks[id]
			if tc.taken {
				assert.NotEqual(t, memLeased, mt.state, "the dead worker's lease was not taken back")
				assert.Equal(t, EndWorkerLost, mt.task.PreviousEnd)
			} else {
				assert.Equal(t, memLeased, mt.state, "the dead worker's lease was taken back")
				assert.Equal(t, leases[0].Token, mt.token)
			}
		})
	}
}
