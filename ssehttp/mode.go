package ssehttp

import (
	"fmt"
	"net/url"
	"strconv"

	"github.com/flowsrun/flows/internal/text"
)

// streamMode is what the messages of a task-status stream carry.
type streamMode int

const (
	// modeSnapshots: a default message with the whole snapshot for every
	// event, as the original clients read it.
	modeSnapshots streamMode = iota
	// modeUpdates: an "event: snapshot" message first, then an
	// "event: update" message with what each event changed.
	modeUpdates
)

// Values of the mode query parameter of task-status.
const (
	ModeSnapshots = "snapshots"
	ModeUpdates   = "updates"
)

// maxModeEcho bounds how much of an unknown mode an error message quotes.
const maxModeEcho = 32

// parseMode reads the mode query parameter of a task-status request: none
// or "" or ModeSnapshots for the default stream, ModeUpdates for the
// update stream. Anything else, or the parameter given twice, is an
// error whose text the client may see.
func parseMode(q url.Values) (streamMode, error) {
	values, ok := q["mode"]
	if !ok {
		return modeSnapshots, nil
	}
	if len(values) > 1 {
		return 0, fmt.Errorf("%s: %s or %s", givenOnce("mode", len(values)), ModeSnapshots, ModeUpdates)
	}
	switch v := values[0]; v {
	case "", ModeSnapshots:
		return modeSnapshots, nil
	case ModeUpdates:
		return modeUpdates, nil
	default:
		if len(v) > maxModeEcho {
			v = text.Clip(v, maxModeEcho) + "..."
		}
		return 0, fmt.Errorf("unknown mode %q: want %s or %s", v, ModeSnapshots, ModeUpdates)
	}
}

// givenOnce is the message of a 400 answer to a request that gives the
// parameter or header name n times where it takes one: which of them the
// client meant is not for the server to guess.
func givenOnce(name string, n int) string {
	return name + " given " + strconv.Itoa(n) + " times; give it once"
}
