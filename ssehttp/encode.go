package ssehttp

import (
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/flowsrun/flows/internal/jsonenc"
	"github.com/flowsrun/flows/progress"
)

// snapshotEncoder writes the snapshots of one task's stream as JSON,
// byte for byte as json.Marshal does, but keeps the encoding of the step
// results already sent: a snapshot's steps only ever grow, so each message
// encodes the new steps only, and a task with many steps does not cost a
// full re-encoding per event.
type snapshotEncoder struct {
	steps []byte // encoded step results so far, comma-separated
	n     int    // how many steps steps holds
}

// bufPool holds message buffers between messages, so that an idle stream
// keeps none. A buffer that grew past maxPooledBuf (a snapshot with many
// or large steps) is left to the garbage collector rather than kept for
// every later message of every stream; see putBuf.
var bufPool = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBuf is the capacity above which a message buffer is not pooled.
const maxPooledBuf = 64 << 10

// putBuf returns *bp to bufPool unless it has grown past maxPooledBuf. It
// reports whether it did.
func putBuf(bp *[]byte) bool {
	if cap(*bp) > maxPooledBuf {
		return false
	}
	bufPool.Put(bp)
	return true
}

// appendSnapshot appends the JSON of snap to buf.
func (e *snapshotEncoder) appendSnapshot(buf []byte, snap progress.Snapshot) ([]byte, error) {
	steps := snap.Details.StepResults
	if len(steps) < e.n {
		e.steps, e.n = e.steps[:0], 0 // not the snapshot encoded before
	}
	for _, st := range steps[e.n:] {
		b, err := json.Marshal(st)
		if err != nil {
			return buf, err
		}
		if e.n > 0 {
			e.steps = append(e.steps, ',')
		}
		e.steps = append(e.steps, b...)
		e.n++
	}
	buf = append(buf, `{"state":`...)
	buf = jsonenc.AppendString(buf, string(snap.State))
	buf = append(buf, `,"details":{"status":`...)
	buf = jsonenc.AppendString(buf, snap.Details.Status)
	buf = append(buf, `,"progress":`...)
	buf = strconv.AppendInt(buf, int64(snap.Details.Progress), 10)
	buf = append(buf, `,"step_results":[`...)
	buf = append(buf, e.steps...)
	buf = append(buf, `],"final_result":`...)
	if snap.Details.FinalResult == nil {
		buf = append(buf, "null"...)
	} else {
		b, err := json.Marshal(snap.Details.FinalResult)
		if err != nil {
			return buf, err
		}
		buf = append(buf, b...)
	}
	buf = append(buf, '}')
	for _, f := range [...]struct {
		name string
		at   time.Time
	}{{`,"updated_at":`, snap.UpdatedAt}, {`,"started_at":`, snap.StartedAt}, {`,"ended_at":`, snap.EndedAt}} {
		if !f.at.IsZero() {
			buf = append(buf, f.name...)
			buf = jsonenc.AppendTime(buf, f.at)
		}
	}
	return append(buf, '}'), nil
}
