package redisbackend

import "time"

// SetInboxLimit changes the bound of subscription buffers until the
// returned function restores it.
func SetInboxLimit(n int) (restore func()) {
	old := inboxLimit
	inboxLimit = n
	return func() { inboxLimit = old }
}

// SetRetireIdle changes how long an empty consumer must be idle for Retire
// to delete it, until the returned function restores it.
func SetRetireIdle(d time.Duration) (restore func()) {
	old := retireIdle
	retireIdle = d
	return func() { retireIdle = old }
}

// Waiting returns how many calls of each batched operation wait for the
// batch in flight to end.
func (b *Backend) Waiting() (appends, acks, creates int) {
	return b.appends.waitingCalls(), b.acks.waitingCalls(), b.creates.waitingCalls()
}

// WaitingSnapshots returns how many Snapshot calls wait for the batch in
// flight to end.
func (b *Backend) WaitingSnapshots() int { return b.snapshots.waitingCalls() }

// MaxFetch is the most tasks one Fetch leases.
const MaxFetch = maxBatch
