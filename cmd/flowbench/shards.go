package main

import (
	"fmt"
	"time"
)

// shares returns each master's share (0..1) of the CPU time used between
// two readings of env.redisCPU.
func shares(before, after []time.Duration) []float64 {
	var total time.Duration
	for i := range after {
		total += after[i] - before[i]
	}
	out := make([]float64, len(after))
	for i := range after {
		if total > 0 {
			out[i] = float64(after[i]-before[i]) / float64(total)
		}
	}
	return out
}

// shardFigures prints, on a cluster, how the runs' load was split across
// the masters: each one's share of the Redis CPU and of the commands, in
// percent. split gives a run's CPU and command shares, in the order of
// env.masters.
func shardFigures[T any](e *env, p *printer, scenario string, runs []T, split func(T) (cpu, commands []float64), par string) {
	if !e.sharded() {
		return
	}
	for i, addr := range e.masterAddrs() {
		shardPar := fmt.Sprintf("%s shard=%s", par, addr)
		p.figure(scenario, fmt.Sprintf("shard%d cpu %%", i+1), collect(runs, func(r T) float64 {
			cpu, _ := split(r)
			return 100 * at(cpu, i)
		}), shardPar)
		p.figure(scenario, fmt.Sprintf("shard%d commands %%", i+1), collect(runs, func(r T) float64 {
			_, commands := split(r)
			return 100 * at(commands, i)
		}), shardPar)
	}
}

// at returns s[i], or 0 past its end.
func at(s []float64, i int) float64 {
	if i < len(s) {
		return s[i]
	}
	return 0
}
