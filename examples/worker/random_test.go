package main

import (
	"math/rand/v2"
	"testing"
	"time"
)

// seededRand returns a random source seeded from the clock, and logs the
// seed so that a failing run can be replayed.
func seededRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed>>1))
}

// randomSleeps returns n sleep durations in ms, from lo to hi.
func randomSleeps(rng *rand.Rand, n, lo, hi int) []int {
	ms := make([]int, n)
	for i := range ms {
		ms[i] = lo + rng.IntN(hi-lo+1)
	}
	return ms
}
