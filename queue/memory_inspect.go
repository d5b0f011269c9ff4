package queue

import (
	"context"
	"slices"
	"strings"
	"time"
)

var (
	_ WorkerRegistry = (*Memory)(nil)
	_ Retirer        = (*Memory)(nil)
)

// Heartbeat implements WorkerRegistry, and takes back the leases of dead
// workers (see WorkerRegistry).
func (m *Memory) Heartbeat(ctx context.Context, w WorkerInfo) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w.LastSeen = time.Now().UTC()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.workers[w.Name] = w
	m.beatDeadline(w, w.LastSeen)
	return nil
}

// Workers implements WorkerRegistry.
func (m *Memory) Workers(ctx context.Context) ([]WorkerInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	list := make([]WorkerInfo, 0, len(m.workers))
	for name, w := range m.workers {
		if now.Sub(w.LastSeen) > ForgetWorkerAfter {
			delete(m.workers, name)
			continue
		}
		list = append(list, w)
	}
	slices.SortFunc(list, func(a, b WorkerInfo) int { return strings.Compare(a.Name, b.Name) })
	return list, nil
}

// Retire implements Retirer: the worker leaves the registry.
func (m *Memory) Retire(ctx context.Context, worker string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.workers, worker)
	delete(m.beats, worker)
	return nil
}

// memView is what an Inspector reads of a Memory backend: every task it
// holds, when the task waiting longest became ready (a cancelled one
// waits for no run: it is left out), and the size of the dead-letter
// set.
type memView struct {
	tasks       []*Task
	oldestReady time.Time
	dead        int64
}

// view returns copies of the tasks m holds and what else memView says.
func (m *Memory) view() memView {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire(time.Now())
	v := memView{tasks: make([]*Task, 0, len(m.tasks)), dead: int64(len(m.dead))}
	for _, mt := range m.tasks {
		v.tasks = append(v.tasks, mt.read())
		if mt.state == memReady && !mt.task.Cancelled && (v.oldestReady.IsZero() || mt.readyAt.Before(v.oldestReady)) {
			v.oldestReady = mt.readyAt
		}
	}
	return v
}
