// Package libflow sets apart the flows of this module's own packages
// (notify's "flows.notify") from a host's: their names begin with Prefix,
// which registry.Register refuses for any flow not marked with Mark. Only
// this module's packages can import it, so a host cannot register a flow
// under a name of the library's, and a worker can trust that a task of a
// flow named so, which it leaves to other workers when it lacks the flow
// (see queue.WorkerConfig.Registry), is one of the library's.
package libflow

import (
	"context"
	"strings"

	"github.com/flowsrun/flows/flow"
)

// Prefix begins the name of every flow of this module's own packages, and
// of no other.
const Prefix = "flows."

// Reserved reports whether name is one that only a flow of this module's
// own packages may have: it begins with Prefix.
func Reserved(name string) bool { return strings.HasPrefix(name, Prefix) }

// marked is a flow that Mark marked as one of this module's own.
type marked struct{ f flow.Flow }

func (m marked) Run(ctx context.Context, t *flow.Task) (any, error) { return m.f.Run(ctx, t) }

// Mark marks f as a flow of this module's own packages, so that
// registry.Register accepts it under a name that begins with Prefix. The
// registry keeps f itself (see Unmark), not the mark.
func Mark(f flow.Flow) flow.Flow { return marked{f} }

// Unmark returns the flow that Mark marked and true, or f and false when f
// carries no mark.
func Unmark(f flow.Flow) (flow.Flow, bool) {
	if m, ok := f.(marked); ok {
		return m.f, true
	}
	return f, false
}
