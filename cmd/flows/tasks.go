package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// ls lists tasks, newest first: one page, or every page with -all.
func (c *cli) ls(ctx context.Context, args []string) error {
	fs := flags("ls")
	state := fs.String("state", "", "keep the tasks in this state: PENDING, PROGRESS, SUCCESS or FAILURE")
	flowName := fs.String("flow", "", "keep the tasks of this flow")
	owner := fs.String("owner", "", "keep the tasks of this owner (exactly)")
	since := fs.String("since", "", "keep the tasks that entered their state (ended, if finished) at or after this time: RFC 3339 or a duration ago (24h)")
	until := fs.String("until", "", "keep the tasks that entered their state (ended, if finished) before this time: RFC 3339 or a duration ago (1h)")
	limit := fs.Int("limit", queue.DefaultListLimit, "tasks per page, 1 to 1000")
	cursor := fs.String("cursor", "", "start after this cursor (the next cursor of a page)")
	all := fs.Bool("all", false, "list every page")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	if *limit < 1 || *limit > queue.MaxListLimit {
		return usagef("-limit %d out of range 1-%d", *limit, queue.MaxListLimit)
	}
	now := c.now()
	o := queue.ListOptions{State: progress.State(strings.ToUpper(*state)), Flow: *flowName, Owner: *owner, Limit: *limit, Cursor: *cursor}
	var err error
	if o.Since, err = timeFlag("since", *since, now); err != nil {
		return err
	}
	if o.Until, err = timeFlag("until", *until, now); err != nil {
		return err
	}
	var tasks []queue.TaskSummary
	var next string
	for {
		page, err := c.in.List(ctx, o)
		if errors.Is(err, queue.ErrInvalidQuery) {
			return usageError{err.Error()}
		}
		if err != nil {
			return err
		}
		tasks = append(tasks, page.Tasks...)
		next = page.Next
		if !*all || next == "" {
			break
		}
		o.Cursor = next
	}
	if c.json {
		if tasks == nil {
			tasks = []queue.TaskSummary{}
		}
		return c.printJSON(queue.TaskPage{Tasks: tasks, Next: next})
	}
	if len(tasks) == 0 {
		fmt.Fprintln(c.out, "no tasks")
		if next != "" {
			// A page by owner may hold none and go on.
			fmt.Fprintf(c.out, "more: %s\n", c.moreCommand(o, next))
		}
		return nil
	}
	w := c.table()
	row(w, "ID", "FLOW", "STATE", "PROGRESS", "ATTEMPT", "SINCE", "STATUS")
	for _, t := range tasks {
		attempt := fmt.Sprintf("%d/%d", t.Attempt, t.Runs())
		if t.HandBacks > 0 {
			attempt += " (" + handBacks(t.HandBacks) + ")"
		}
		row(w, t.ID, t.Flow, string(t.State), strconv.Itoa(t.Progress)+"%",
			attempt, ago(now, t.ChangedAt()), clip(t.Status, 48))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(c.out, "more: %s\n", c.moreCommand(o, next))
	}
	return nil
}

// timeFlag reads the value v of the time flag name: "" for none, an RFC
// 3339 time, or a duration (24h, 90m) that means that long before now.
func timeFlag(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if at, err := time.Parse(time.RFC3339, v); err == nil {
		return at, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, usagef("-%s %q is neither an RFC 3339 time (2026-12-06T05:00:00Z) nor a duration ago (24h)", name, v)
	}
	return now.Add(-d), nil
}

// moreCommand is the command line that lists the page after the one o
// listed, whose next cursor is next: the same filters (a time as the
// instant it stood for; a cursor holds a position, not the filters), the
// same -limit unless it is the default, and the cursor.
func (c *cli) moreCommand(o queue.ListOptions, next string) string {
	lim := ""
	if o.Limit != queue.DefaultListLimit {
		lim = strconv.Itoa(o.Limit)
	}
	return c.filterCommand("ls", o, "limit", lim, "cursor", next)
}

// filterCommand is the command line of the command name with the global
// flags given on c's command line (c.global), the filters of o (a time as
// the instant it stood for) and then the flags and values of tail, in
// pairs; an empty value leaves its flag out.
func (c *cli) filterCommand(name string, o queue.ListOptions, tail ...string) string {
	cmd := []string{"flows"}
	add := func(flag, v string) {
		if v != "" {
			cmd = append(cmd, "-"+flag, shellQuote(v))
		}
	}
	for i := 0; i+1 < len(c.global); i += 2 {
		add(c.global[i], c.global[i+1])
	}
	cmd = append(cmd, name)
	add("state", string(o.State))
	add("flow", o.Flow)
	add("owner", o.Owner)
	if !o.Since.IsZero() {
		add("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	if !o.Until.IsZero() {
		add("until", o.Until.UTC().Format(time.RFC3339Nano))
	}
	for i := 0; i+1 < len(tail); i += 2 {
		add(tail[i], tail[i+1])
	}
	return strings.Join(cmd, " ")
}

// shellQuote quotes v for a POSIX shell when it holds anything but
// letters, digits and -_.:/+@=.
func shellQuote(v string) string {
	plain := strings.IndexFunc(v, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:/+@=", r))
	}) < 0
	if plain {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// showJSON is what show -json prints: the task's queue record and its
// snapshot.
type showJSON struct {
	Task        *queue.Task       `json:"task"`
	Snapshot    progress.Snapshot `json:"snapshot"`
	LastEventID string            `json:"last_event_id"`
}

// show prints one task, and with -follow its events until it ends.
func (c *cli) show(ctx context.Context, args []string) error {
	fs := flags("show")
	follow := fs.Bool("follow", false, "print the task's events as they happen, until it ends")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one task id, got %d arguments", fs.NArg())
	}
	id := fs.Arg(0)
	info, err := c.in.Task(ctx, id)
	if err != nil {
		return err
	}
	if c.json {
		if err := c.printJSON(showJSON{Task: info.Task, Snapshot: info.Snapshot, LastEventID: info.LastEventID}); err != nil {
			return err
		}
	} else {
		c.printTask(id, info)
	}
	if !*follow {
		return nil
	}
	state := info.Snapshot.State
	if !state.Terminal() {
		if state, err = c.follow(ctx, id, info.LastEventID); err != nil {
			return err
		}
	}
	if state == progress.StateFailure {
		return errTaskFailed
	}
	return nil
}

// printTask prints a task for people.
func (c *cli) printTask(id string, info *queue.TaskInfo) {
	now := c.now()
	s := info.Snapshot
	w := c.table()
	field := func(name, value string) {
		if value != "" {
			row(w, name+":", value)
		}
	}
	field("ID", id)
	if t := info.Task; t != nil {
		field("Flow", t.Flow)
	}
	field("State", string(s.State))
	field("Progress", strconv.Itoa(s.Details.Progress)+"%")
	field("Status", s.Details.Status)
	if t := info.Task; t != nil {
		field("Attempt", attemptOf(t.Attempts(), t.Runs(), t.HandBacks))
		field("Owner", t.Owner)
		if t.Resume {
			field("Requeued from", t.RequeuedFrom+" (resumed)")
		} else {
			field("Requeued from", t.RequeuedFrom)
		}
		if t.Cancelled {
			field("Cancelled", "yes")
		}
		field("Enqueued", stamp(t.EnqueuedAt)+"  "+ago(now, t.EnqueuedAt))
		if !t.RunAt.IsZero() {
			field("Due", stamp(t.RunAt)+"  "+ago(now, t.RunAt))
		}
		field("Inputs", clip(string(t.Inputs), 200))
	}
	if !s.StartedAt.IsZero() {
		field("Started", stamp(s.StartedAt)+"  "+ago(now, s.StartedAt))
	}
	if !s.EndedAt.IsZero() {
		field("Ended", stamp(s.EndedAt)+"  "+ago(now, s.EndedAt))
	}
	_ = w.Flush()
	if len(s.Details.StepResults) > 0 {
		fmt.Fprintln(c.out, "Steps:")
		for i, st := range s.Details.StepResults {
			fmt.Fprintf(c.out, "  %d. %s\n", i+1, stepLine(st))
		}
	}
	if s.Details.FinalResult != nil {
		fmt.Fprintf(c.out, "Result: %s\n", clip(string(s.Details.FinalResult), 2000))
	}
}

// stepLine writes a step result on one line.
func stepLine(st progress.StepResult) string {
	if st.Type == progress.StepToolResult {
		return fmt.Sprintf("%s/%s: %s", st.StepName, st.Tool, clip(string(st.Data), 160))
	}
	return clip(st.Message, 200)
}

// follow prints the task's events after afterID as they come, until the
// task ends, and returns its last state. A subscription may end before
// the task does, the task still there: on Redis, when a failover lost
// events it had delivered, or those up to the id it followed from (see
// progress.Subscriber). follow then says so on stderr and follows again,
// as an event stream's client reconnects: after the last id it printed,
// and when a subscription ends without an event (the store no longer
// holds the events up to its id), from the first event, which it prints
// again. A task gone, or a subscription from the first event that ends
// without one, gives an error.
func (c *cli) follow(ctx context.Context, id, afterID string) (progress.State, error) {
	endedEarly := fmt.Errorf("task %s: the events ended before the task did (its record expired?)", id)
	last := afterID
	for again := false; ; again = true {
		events, err := c.backend.Subscribe(ctx, id, last)
		if again && errors.Is(err, progress.ErrNotFound) {
			return "", endedEarly
		}
		if err != nil {
			return "", err
		}
		var state progress.State
		n := 0
		enc := json.NewEncoder(c.out)
		for e := range events {
			n++
			if e.ID != "" {
				last = e.ID
			}
			if c.json {
				if err := enc.Encode(e); err != nil {
					return "", err
				}
			} else {
				fmt.Fprintln(c.out, eventLine(e))
			}
			if e.Terminal() {
				state = e.State
			}
		}
		if err := ctx.Err(); err != nil {
			return "", err
		}
		if state != "" {
			return state, nil
		}
		if n == 0 {
			if last == "" {
				return "", endedEarly
			}
			last = ""
		}
		fmt.Fprintf(c.errw, "flows: task %s: its events ended before it did (a Redis failover that lost some?); following again after %s\n",
			id, cmp.Or(last, "the start"))
	}
}

// eventLine writes an event on one line: its id, then what it says.
func eventLine(e progress.Event) string {
	var what string
	switch e.Type {
	case progress.EventState:
		what = string(e.State)
		if e.Status != "" {
			what += "  " + clip(e.Status, 120)
		}
		if len(e.Result) > 0 {
			what += "  result: " + clip(string(e.Result), 160)
		}
	case progress.EventStatus:
		what = "status  " + clip(e.Status, 120)
	case progress.EventProgress:
		what = fmt.Sprintf("progress %d%%", e.Progress)
		if e.Status != "" {
			what += "  " + clip(e.Status, 120)
		}
	case progress.EventStep:
		what = "step    " + stepLine(*e.Step)
	case progress.EventToken:
		what = "token   " + strconv.Quote(e.Token)
	default:
		what = string(e.Type)
	}
	return fmt.Sprintf("%-8s %s", e.ID, what)
}

// cancel asks tasks to stop: those named, or those a filter selects.
func (c *cli) cancel(ctx context.Context, args []string) error {
	fs := flags("cancel")
	state := fs.String("state", "", "cancel the tasks in this state: PENDING or PROGRESS")
	flowName := fs.String("flow", "", "cancel the pending and running tasks of this flow")
	owner := fs.String("owner", "", "cancel the pending and running tasks of this owner (exactly)")
	since := fs.String("since", "", "cancel the tasks that entered their state at or after this time: RFC 3339 or a duration ago (24h)")
	until := fs.String("until", "", "cancel the tasks that entered their state before this time: RFC 3339 or a duration ago (1h)")
	limit := fs.Int("limit", queue.MaxListLimit, "most tasks cancelled by a filter, 1 to 1000")
	cursor := fs.String("cursor", "", "go on where a call stopped (the cursor its last line gives)")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	byFilter := *state != "" || *flowName != "" || *owner != "" || *since != "" || *until != ""
	switch {
	case byFilter && fs.NArg() > 0:
		return usagef("give task ids or a filter (-state, -flow, -owner, -since, -until), not both")
	case !byFilter && fs.NArg() == 0:
		return usagef("give task ids, or a filter: -state, -flow, -owner, -since and/or -until")
	}
	if byFilter {
		now := c.now()
		f := queue.CancelFilter{State: progress.State(strings.ToUpper(*state)), Flow: *flowName, Owner: *owner, Limit: *limit, Cursor: *cursor}
		var err error
		if f.Since, err = timeFlag("since", *since, now); err != nil {
			return err
		}
		if f.Until, err = timeFlag("until", *until, now); err != nil {
			return err
		}
		res, err := c.in.CancelMatching(ctx, f)
		if errors.Is(err, queue.ErrInvalidQuery) {
			return usageError{err.Error()}
		}
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(res)
		}
		for _, id := range res.Cancelled {
			fmt.Fprintf(c.out, "cancelled %s\n", id)
		}
		for _, id := range res.AlreadyCancelled {
			fmt.Fprintf(c.out, "already asked to stop %s\n", id)
		}
		fmt.Fprintf(c.out, "%d cancelled\n", len(res.Cancelled))
		if n := len(res.AlreadyCancelled); n > 0 {
			fmt.Fprintf(c.out, "%d already asked to stop\n", n)
		}
		if res.More {
			lim := ""
			if f.Limit != queue.MaxListLimit {
				lim = strconv.Itoa(f.Limit)
			}
			o := queue.ListOptions{State: f.State, Flow: f.Flow, Owner: f.Owner, Since: f.Since, Until: f.Until}
			fmt.Fprintf(c.out, "more are left: %s\n", c.filterCommand("cancel", o, "limit", lim, "cursor", res.Next))
		}
		return nil
	}
	return c.eachID(fs.Args(), func(id string) (idResult, error) {
		err := c.in.Cancel(ctx, id)
		switch {
		case err == nil:
			return idResult{TaskID: id, Done: "cancelled " + id}, nil
		case errors.Is(err, queue.ErrFinished):
			return idResult{TaskID: id, Error: "already finished"}, nil
		case errors.Is(err, queue.ErrNotFound):
			return idResult{TaskID: id, Error: "not found"}, nil
		}
		return idResult{}, err
	})
}

// idResult is what a command that acts on tasks by id did to one: Done
// says it for people, Error says why it could not.
type idResult struct {
	TaskID string `json:"task_id"`
	NewID  string `json:"new_task_id,omitempty"`
	Error  string `json:"error,omitempty"`
	Done   string `json:"-"`
}

// eachID runs act on every id, in order, and reports what it did: a line
// per id for people (the failures on stderr), a JSON array for scripts.
// An error act returns ends the run (Redis is down, say); a failure it
// reports in the result does not, but makes eachID return an error.
func (c *cli) eachID(ids []string, act func(id string) (idResult, error)) error {
	results := make([]idResult, 0, len(ids))
	failed := 0
	for _, id := range ids {
		r, err := act(id)
		if err != nil {
			return err
		}
		if r.Error != "" {
			failed++
			if !c.json {
				fmt.Fprintf(c.errw, "%s: %s\n", id, r.Error)
			}
		} else if !c.json {
			fmt.Fprintln(c.out, r.Done)
		}
		results = append(results, r)
	}
	if c.json {
		if err := c.printJSON(results); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d tasks failed", failed, len(ids))
	}
	return nil
}
