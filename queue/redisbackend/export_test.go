package redisbackend

// SetInboxLimit changes the bound of subscription buffers until the
// returned function restores it.
func SetInboxLimit(n int) (restore func()) {
	old := inboxLimit
	inboxLimit = n
	return func() { inboxLimit = old }
}
