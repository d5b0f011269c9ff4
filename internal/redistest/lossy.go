package redistest

import (
	"strconv"
	"testing"
)

// KeepKeys remembers keys as they are now, and returns what a failover
// that lost the writes since does to them: it puts back each key that
// existed then, with its value and expiry time of then, and deletes each
// one that did not. It plays, on one server and deterministically, a
// replica that stopped receiving the primary's writes now and is
// promoted later (the new primary holds what it had received).
func (s *Server) KeepKeys(tb testing.TB, keys ...string) (promote func()) {
	tb.Helper()
	type kept struct{ dump, expiry string }
	then := make(map[string]kept, len(keys))
	for _, key := range keys {
		n, err := s.Do("EXISTS", key).AsInt64()
		if err != nil {
			tb.Fatalf("redistest: EXISTS %s: %v", key, err)
		}
		if n == 0 {
			continue
		}
		dump, err := s.Do("DUMP", key).ToString()
		if err != nil {
			tb.Fatalf("redistest: DUMP %s: %v", key, err)
		}
		at, err := s.Do("PEXPIRETIME", key).AsInt64()
		if err != nil {
			tb.Fatalf("redistest: PEXPIRETIME %s: %v", key, err)
		}
		then[key] = kept{dump, strconv.FormatInt(max(at, 0), 10)}
	}
	return func() {
		tb.Helper()
		for _, key := range keys {
			if err := s.Do("DEL", key).Error(); err != nil {
				tb.Fatalf("redistest: DEL %s: %v", key, err)
			}
			k, ok := then[key]
			if !ok {
				continue
			}
			// An expiry time of 0 is none; ABSTTL takes it as Unix ms.
			if err := s.Do("RESTORE", key, k.expiry, k.dump, "ABSTTL").Error(); err != nil {
				tb.Fatalf("redistest: RESTORE %s: %v", key, err)
			}
		}
	}
}
