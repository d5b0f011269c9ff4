package failover

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/rueidis"
)

// LostTask is what Redis and the logs hold of a lost task once the run
// has given up waiting for it, so that a failing run tells why the task
// never ended. The key names follow queue/redisbackend's schema (its
// default prefix and queue).
type LostTask struct {
	// ID is the task's id.
	ID string
	// Record is its task hash (queue record and snapshot fields), nil
	// when the hash is gone.
	Record map[string]string
	// Entries are the queue stream's entries that name it, each with
	// whether it is in the consumer group's pending list, for which
	// consumer, its holder (lease number) and lease deadline.
	Entries []LostEntry
	// Delayed is its score in the delayed set (due time, Unix ms), "" if
	// it is not there; Dead its score in the dead set.
	Delayed, Dead string
	// LastDelivered is the group's last delivered entry id, and Pending
	// the number of entries in its pending list.
	LastDelivered string
	Pending       int64
	// Started is how many times its flow started.
	Started int
	// Logs are the log lines that named the task.
	Logs []string
	// Err is why part of this could not be read, nil if it was.
	Err error
}

// LostEntry is a queue stream entry naming a lost task.
type LostEntry struct {
	ID string
	// Consumer is the consumer whose pending list holds the entry, ""
	// when it is not pending (never delivered, or acknowledged).
	Consumer string
	// Deliveries is how many times it was delivered, if pending.
	Deliveries int64
	// Holder and Lease are the holder in its lease's token (the lease's
	// number, or "lost/" and it) and the token's score in the leases set
	// (its deadline), "" when absent; for a lease of the layout before
	// the one lease structure, its holders-hash value and leases-set
	// score.
	Holder, Lease string
}

// String renders the task's state on one line per part.
func (l LostTask) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "task %s (flow started %d times):", l.ID, l.Started)
	if l.Record == nil {
		b.WriteString(" no record")
	} else {
		keys := make([]string, 0, len(l.Record))
		for k := range l.Record {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString(" record")
		for _, k := range keys {
			v := l.Record[k]
			if len(v) > 80 {
				v = v[:80] + "…"
			}
			fmt.Fprintf(&b, " %s=%q", k, v)
		}
	}
	if len(l.Entries) == 0 {
		b.WriteString("\n  no stream entry")
	}
	for _, e := range l.Entries {
		fmt.Fprintf(&b, "\n  stream entry %s: ", e.ID)
		if e.Consumer == "" {
			b.WriteString("not pending")
		} else {
			fmt.Fprintf(&b, "pending for %s (%d deliveries)", e.Consumer, e.Deliveries)
		}
		fmt.Fprintf(&b, ", holder %q, lease deadline %q", e.Holder, e.Lease)
	}
	fmt.Fprintf(&b, "\n  delayed %q, dead %q; group: last delivered %s, %d pending", l.Delayed, l.Dead, l.LastDelivered, l.Pending)
	if l.Err != nil {
		fmt.Fprintf(&b, "\n  read error: %v", l.Err)
	}
	for _, line := range l.Logs {
		b.WriteString("\n  log: " + line)
	}
	return b.String()
}

// explain reads what Redis holds of the lost tasks ids through client,
// with the logs that named them.
func explain(ctx context.Context, client rueidis.Client, prefix, queueName string, ids []string, logs *taskLogs) []LostTask {
	q := prefix + ":{q:" + queueName + "}"
	stream, leases := q+":stream", q+":leased"
	oldLeases, oldHolders := q+":leases", q+":holders"
	delayed, dead := q+":delayed", q+":dead"
	const group = "workers"
	out := make([]LostTask, len(ids))
	// One look at the stream and the pending list serves every task.
	byTask := map[string][]string{}
	entries, err := client.Do(ctx, client.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
	for _, e := range entries {
		byTask[e.FieldValues["task"]] = append(byTask[e.FieldValues["task"]], e.ID)
	}
	pending := map[string]LostEntry{}
	var lastDelivered string
	var npending int64
	if err == nil {
		var rows []rueidis.RedisMessage
		rows, err = client.Do(ctx, client.B().Xpending().Key(stream).Group(group).Start("-").End("+").Count(1_000_000).Build()).ToArray()
		for _, row := range rows {
			f, _ := row.ToArray()
			if len(f) < 4 {
				continue
			}
			id, _ := f[0].ToString()
			consumer, _ := f[1].ToString()
			n, _ := f[3].AsInt64()
			pending[id] = LostEntry{ID: id, Consumer: consumer, Deliveries: n}
		}
		npending = int64(len(rows))
	}
	if err == nil {
		var groups []rueidis.RedisMessage
		groups, err = client.Do(ctx, client.B().XinfoGroups().Key(stream).Build()).ToArray()
		for _, g := range groups {
			m, _ := g.AsStrMap()
			if m["name"] == group {
				lastDelivered = m["last-delivered-id"]
			}
		}
	}
	// A lease is its token "<entry id>/<holder>" in the leases set, scored
	// by its deadline: one read of the set serves every entry.
	type lease struct{ holder, deadline string }
	held := map[string]lease{}
	tokens, _ := client.Do(ctx, client.B().Zrange().Key(leases).Min("0").Max("-1").Withscores().Build()).AsZScores()
	for _, z := range tokens {
		if entry, holder, ok := strings.Cut(z.Member, "/"); ok {
			held[entry] = lease{holder, strconv.FormatFloat(z.Score, 'f', -1, 64)}
		}
	}
	for i, id := range ids {
		l := LostTask{ID: id, LastDelivered: lastDelivered, Pending: npending, Err: err, Logs: logs.of(id)}
		rec, rerr := client.Do(ctx, client.B().Hgetall().Key(prefix+":{"+id+"}:task").Build()).AsStrMap()
		if rerr == nil && len(rec) > 0 {
			l.Record = rec
		}
		for _, e := range byTask[id] {
			le, ok := pending[e]
			if !ok {
				le = LostEntry{ID: e}
			}
			if h, ok := held[e]; ok {
				le.Holder, le.Lease = h.holder, h.deadline
			} else {
				le.Holder, _ = client.Do(ctx, client.B().Hget().Key(oldHolders).Field(e).Build()).ToString()
				le.Lease, _ = client.Do(ctx, client.B().Zscore().Key(oldLeases).Member(e).Build()).ToString()
			}
			l.Entries = append(l.Entries, le)
		}
		l.Delayed, _ = client.Do(ctx, client.B().Zscore().Key(delayed).Member(id).Build()).ToString()
		l.Dead, _ = client.Do(ctx, client.B().Zscore().Key(dead).Member(id).Build()).ToString()
		if l.Err == nil {
			l.Err = rerr
		}
		out[i] = l
	}
	return out
}

// taskLogs passes log records on to a handler and keeps, per task, the
// lines of those that name one (the attribute task_id), up to a bound.
type taskLogs struct {
	mu    sync.Mutex
	lines map[string][]string
}

// maxTaskLogs bounds the lines kept per task.
const maxTaskLogs = 20

func (t *taskLogs) of(id string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.lines[id])
}

func (t *taskLogs) add(id, line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lines == nil {
		t.lines = map[string][]string{}
	}
	if len(t.lines[id]) < maxTaskLogs {
		t.lines[id] = append(t.lines[id], line)
	}
}

// logHandler is the slog.Handler that feeds a taskLogs.
type logHandler struct {
	next  slog.Handler
	logs  *taskLogs
	attrs []slog.Attr
}

func (h *logHandler) Enabled(context.Context, slog.Level) bool {
	return true // every record may name a task
}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	var id string
	var b strings.Builder
	b.WriteString(r.Time.Format("15:04:05.000") + " " + r.Level.String() + " " + r.Message)
	each := func(a slog.Attr) bool {
		if a.Key == "task_id" {
			id = a.Value.String()
		}
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		each(a)
	}
	r.Attrs(each)
	if id != "" {
		h.logs.add(id, b.String())
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logHandler{next: h.next.WithAttrs(attrs), logs: h.logs, attrs: append(slices.Clone(h.attrs), attrs...)}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{next: h.next.WithGroup(name), logs: h.logs, attrs: h.attrs}
}
