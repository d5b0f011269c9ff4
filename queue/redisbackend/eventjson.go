package redisbackend

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/flowsrun/flows/internal/jsonenc"
	"github.com/flowsrun/flows/progress"
)

// Events are stored and published as JSON on every Append, so they are
// encoded by hand rather than through reflection; the output is byte for
// byte what json.Marshal writes (eventjson_test.go checks it), so stored
// events read back the same whichever encoder wrote them.

// appendStepJSON appends st as JSON.
func appendStepJSON(buf []byte, st *progress.StepResult) ([]byte, error) {
	buf = append(buf, `{"type":`...)
	buf = jsonenc.AppendString(buf, st.Type)
	if st.Message != "" {
		buf = append(buf, `,"message":`...)
		buf = jsonenc.AppendString(buf, st.Message)
	}
	if st.StepName != "" {
		buf = append(buf, `,"step_name":`...)
		buf = jsonenc.AppendString(buf, st.StepName)
	}
	if st.Tool != "" {
		buf = append(buf, `,"tool":`...)
		buf = jsonenc.AppendString(buf, st.Tool)
	}
	if len(st.Data) > 0 {
		buf = append(buf, `,"data":`...)
		var err error
		if buf, err = appendRawJSON(buf, st.Data); err != nil {
			return buf, err
		}
	}
	return appendAt(buf, st.At), nil
}

// appendAt appends a time's field, "at", unless the time is zero, and
// closes the object, as json.Marshal writes a time.Time field with
// omitzero last.
func appendAt(buf []byte, at time.Time) []byte {
	if !at.IsZero() {
		buf = append(buf, `,"at":`...)
		buf = jsonenc.AppendTime(buf, at)
	}
	return append(buf, '}')
}

// appendEventJSON appends e, without its id, as JSON; step is the JSON of
// e.Step from appendStepJSON (nil when e has no step).
func appendEventJSON(buf []byte, e progress.Event, step []byte) ([]byte, error) {
	buf = append(buf, `{"type":`...)
	buf = jsonenc.AppendString(buf, string(e.Type))
	if e.State != "" {
		buf = append(buf, `,"state":`...)
		buf = jsonenc.AppendString(buf, string(e.State))
	}
	if e.Status != "" {
		buf = append(buf, `,"status":`...)
		buf = jsonenc.AppendString(buf, e.Status)
	}
	if e.Progress != 0 {
		buf = append(buf, `,"progress":`...)
		buf = strconv.AppendInt(buf, int64(e.Progress), 10)
	}
	if e.Step != nil {
		buf = append(buf, `,"step":`...)
		buf = append(buf, step...)
	}
	if e.Token != "" {
		buf = append(buf, `,"token":`...)
		buf = jsonenc.AppendString(buf, e.Token)
	}
	if len(e.Result) > 0 {
		buf = append(buf, `,"result":`...)
		var err error
		if buf, err = appendRawJSON(buf, e.Result); err != nil {
			return buf, err
		}
	}
	return appendAt(buf, e.At), nil
}

// appendRawJSON appends raw as json.Marshal writes a json.RawMessage:
// compacted, with HTML characters escaped. It fails on invalid JSON.
func appendRawJSON(buf []byte, raw json.RawMessage) ([]byte, error) {
	if marshalKeeps(raw) && json.Valid(raw) {
		return append(buf, raw...), nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return buf, err
	}
	return append(buf, b...), nil
}

// marshalKeeps reports whether json.Marshal writes raw, if valid, as it
// is: it has no whitespace to compact, no '<', '>' or '&' to escape and no
// byte that may start U+2028 or U+2029, which are escaped too.
func marshalKeeps(raw []byte) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2:
			return false
		}
	}
	return true
}
