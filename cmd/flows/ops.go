package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/flowsrun/flows/queue"
)

// stats prints the counts, the depth, the workers and the last minute.
func (c *cli) stats(ctx context.Context, args []string) error {
	fs := flags("stats")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	st, err := c.in.Stats(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(st)
	}
	now := c.now()
	w := c.table()
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	row(w, "FLOW", "PENDING", "PROGRESS", "SUCCESS", "FAILURE")
	for _, f := range st.Flows {
		row(w, f.Flow, n(f.Counts.Pending), n(f.Counts.Progress), n(f.Counts.Success), n(f.Counts.Failure))
	}
	row(w, "all", n(st.Counts.Pending), n(st.Counts.Progress), n(st.Counts.Success), n(st.Counts.Failure))
	if err := w.Flush(); err != nil {
		return err
	}
	oldest := "none waits"
	if !st.OldestReady.IsZero() {
		oldest = "oldest ready " + ago(now, st.OldestReady)
	}
	fmt.Fprintf(c.out, "\nqueue: %d ready (%s), %d delayed, %d with hooks to re-run, %d running; %d dead\n",
		st.Ready, oldest, st.Delayed, st.HooksWaiting, st.Running, st.Dead)
	lm := st.LastMinute
	fmt.Fprintf(c.out, "last minute: %d succeeded, %d failed, %.2f/s", lm.Succeeded, lm.Failed, lm.PerSecond)
	if lm.Sampled > 0 {
		fmt.Fprintf(c.out, "; wait p50 %s p95 %s, run p50 %s p95 %s (of %d)",
			ms(lm.Wait.P50), ms(lm.Wait.P95), ms(lm.Run.P50), ms(lm.Run.P95), lm.Sampled)
	}
	fmt.Fprintln(c.out)
	if len(st.Workers) == 0 {
		fmt.Fprintln(c.out, "\nno workers")
		return nil
	}
	fmt.Fprintln(c.out)
	w = c.table()
	row(w, "WORKER", "HOST", "PID", "SLOTS", "RUNNING", "STARTED", "LAST SEEN", "ALIVE")
	for _, wk := range st.Workers {
		alive := "yes"
		if !wk.Alive {
			alive = "NO"
		}
		row(w, wk.Name, wk.Host, strconv.Itoa(wk.PID), strconv.Itoa(wk.Slots), strconv.Itoa(wk.Running),
			ago(now, wk.StartedAt), ago(now, wk.LastSeen), alive)
	}
	return w.Flush()
}

// dead lists the dead-letter set, newest first.
func (c *cli) dead(ctx context.Context, args []string) error {
	fs := flags("dead")
	limit := fs.Int("limit", queue.DefaultListLimit, "most entries, 1 to 1000")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	if *limit < 1 || *limit > queue.MaxListLimit {
		return usagef("-limit %d out of range 1-%d", *limit, queue.MaxListLimit)
	}
	list, err := c.in.Dead(ctx, *limit)
	if err != nil {
		return err
	}
	if c.json {
		if list == nil {
			list = []queue.DeadTask{}
		}
		return c.printJSON(list)
	}
	if len(list) == 0 {
		fmt.Fprintln(c.out, "no dead tasks")
		return nil
	}
	now := c.now()
	w := c.table()
	row(w, "ID", "FLOW", "ATTEMPTS", "BURIED", "REASON")
	for _, d := range list {
		row(w, d.ID, d.Flow, strconv.Itoa(d.Attempts), ago(now, d.BuriedAt), clip(d.Reason, 60))
	}
	return w.Flush()
}

// requeue runs dead tasks again, each as a new task; with -resume, each
// new task resumes its dead task (see queue.RequeueOptions.Resume).
func (c *cli) requeue(ctx context.Context, args []string) error {
	fs := flags("requeue")
	resume := fs.Bool("resume", false, "replay the steps each dead task completed instead of running them again")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("give the ids of dead tasks")
	}
	return c.eachID(fs.Args(), func(id string) (idResult, error) {
		newID, err := c.in.RequeueWith(ctx, id, queue.RequeueOptions{Resume: *resume})
		switch {
		case err == nil:
			done := fmt.Sprintf("%s requeued as %s", id, newID)
			if *resume {
				done += ", resuming its completed steps"
			}
			return idResult{TaskID: id, NewID: newID, Done: done}, nil
		case errors.Is(err, queue.ErrNotDead):
			return idResult{TaskID: id, Error: "not in the dead-letter set"}, nil
		case errors.Is(err, queue.ErrNotFound):
			return idResult{TaskID: id, Error: "not found"}, nil
		}
		return idResult{}, err
	})
}
