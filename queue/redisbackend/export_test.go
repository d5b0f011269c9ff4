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
