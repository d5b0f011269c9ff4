package ssehttp

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/flowsrun/flows/internal/jsonenc"
	"github.com/flowsrun/flows/progress"
)

// snapshotMark is what an update compares a snapshot with: the fields of
// the snapshot before an event, but for the steps, which only grow.
type snapshotMark struct {
	state           progress.State
	status          string
	progress, steps int
	final           json.RawMessage
	started, ended  time.Time
}

// markOf returns the mark of snap. The final result is shared, not copied:
// a snapshot replaces it, never changes it in place.
func markOf(snap *progress.Snapshot) snapshotMark {
	return snapshotMark{
		state: snap.State, status: snap.Details.Status, progress: snap.Details.Progress,
		steps: len(snap.Details.StepResults), final: snap.Details.FinalResult,
		started: snap.StartedAt, ended: snap.EndedAt,
	}
}

// appendUpdate appends the JSON of the update from before to snap: an
// object with the members that changed, of
//
//	"state", "status", "progress", "final_result", "started_at", "ended_at"
//	    the snapshot's field of that name (status and progress are in
//	    "details" in a snapshot), when the event changed it;
//	"step", "index"
//	    the step result the event appended, and its index in step_results;
//	"at"
//	    when the event was recorded (the snapshot's updated_at), when the
//	    store records times.
//
// An event that changes nothing gives {} (or only "at").
func appendUpdate(buf []byte, before snapshotMark, snap *progress.Snapshot) ([]byte, error) {
	buf = append(buf, '{')
	start := len(buf)
	key := func(name string) {
		if len(buf) > start {
			buf = append(buf, ',')
		}
		buf = append(buf, '"')
		buf = append(buf, name...)
		buf = append(buf, `":`...)
	}
	d := &snap.Details
	if snap.State != before.state {
		key("state")
		buf = jsonenc.AppendString(buf, string(snap.State))
	}
	if d.Status != before.status {
		key("status")
		buf = jsonenc.AppendString(buf, d.Status)
	}
	if d.Progress != before.progress {
		key("progress")
		buf = strconv.AppendInt(buf, int64(d.Progress), 10)
	}
	if n := len(d.StepResults); n > before.steps {
		// An event appends one step at most.
		b, err := json.Marshal(d.StepResults[before.steps])
		if err != nil {
			return buf, err
		}
		key("step")
		buf = append(buf, b...)
		key("index")
		buf = strconv.AppendInt(buf, int64(before.steps), 10)
	}
	if !bytes.Equal(d.FinalResult, before.final) {
		key("final_result")
		if d.FinalResult == nil {
			buf = append(buf, "null"...)
		} else {
			b, err := json.Marshal(d.FinalResult)
			if err != nil {
				return buf, err
			}
			buf = append(buf, b...)
		}
	}
	for _, f := range [...]struct {
		name        string
		now, before time.Time
	}{{"started_at", snap.StartedAt, before.started}, {"ended_at", snap.EndedAt, before.ended}} {
		if !f.now.Equal(f.before) && !f.now.IsZero() {
			key(f.name)
			buf = jsonenc.AppendTime(buf, f.now)
		}
	}
	if !snap.UpdatedAt.IsZero() {
		key("at")
		buf = jsonenc.AppendTime(buf, snap.UpdatedAt)
	}
	return append(buf, '}'), nil
}
