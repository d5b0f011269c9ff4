package progress

import "time"

// SetMemoryClock replaces the clock of s, so that tests can move time
// forward past the retention period without waiting.
func SetMemoryClock(s *MemoryStore, now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}
