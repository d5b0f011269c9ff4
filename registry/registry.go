// Package registry maps flow names to flows. A host registers its flows at
// start-up, usually in the package-level [Default] registry:
//
//	registry.MustRegister("poem_flow", poemFlow, registry.Description("Writes a short poem"))
//
// [MustRegister] panics on a bad or duplicate name, a name reserved for
// this module's own flows (beginning "flows.", see [Registry.Register]),
// a nil flow or an option value that cannot work, so that a misconfigured
// program stops at start-up. Options describe the flow ([Description], [Label]) and set
// how its tasks run ([Policy]: [Timeout], [MaxAttempts], [Backoff], and
// the limits on its starts [Concurrency] and [Rate]). Tests and hosts that need several
// independent sets of flows use their own [Registry] from [New].
package registry

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"sync"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/libflow"
)

// Errors returned by Register and Lookup; check them with errors.Is.
var (
	// ErrDuplicate: a flow is already registered under that name.
	ErrDuplicate = errors.New("registry: flow already registered")
	// ErrInvalid: the name, the flow or an option's value is not
	// acceptable.
	ErrInvalid = errors.New("registry: invalid flow")
	// ErrUnknownFlow: no flow is registered under that name.
	ErrUnknownFlow = errors.New("unknown flow")
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// Info describes a registered flow, as GET /flows/ lists it.
type Info struct {
	// Name is the name the flow is started by.
	Name string `json:"name"`
	// Description says what the flow does.
	Description string `json:"description"`
	// Schema describes the flow's inputs.
	Schema *flow.Schema `json:"input_schema"`
	// Labels are free-form facts about the flow for clients to show, such
	// as the model it uses ("model": "offline model (scripted, no
	// network)").
	Labels map[string]string `json:"labels,omitempty"`
	// Internal marks a flow that only the host's own code enqueues (see
	// the Internal option): List leaves it out and ssehttp refuses to
	// start it.
	Internal bool `json:"-"`
	// Policy is how the workers run the flow's tasks: time limit,
	// attempts, backoff, and limits on its starts (see Policy).
	Policy Policy `json:"-"`

	err error // the first bad option value (see Info.invalid)
}

// Entry is a registered flow with its description.
type Entry struct {
	Info
	// Flow is the flow itself.
	Flow flow.Flow
}

// Option sets part of a flow's Info at registration. An option given a
// value that cannot work (a Policy option's) makes Register fail with
// ErrInvalid.
type Option func(*Info)

// Description sets the flow's description.
func Description(text string) Option { return func(i *Info) { i.Description = text } }

// Label adds a label to the flow's Info.
func Label(key, value string) Option {
	return func(i *Info) {
		if i.Labels == nil {
			i.Labels = map[string]string{}
		}
		i.Labels[key] = value
	}
}

// Internal marks the flow as one that only the host's own code enqueues
// (through queue.Broker), never a client: List does not show it and
// ssehttp's start-task answers 404 for it, as for an unknown flow. Workers
// run it as any other. The delivery flow of package notify is one: a
// client that could start it would have the host sign and send messages
// of the client's choosing.
func Internal() Option { return func(i *Info) { i.Internal = true } }

// Registry is a set of named flows, safe for concurrent use. The zero
// value is not usable; call New.
type Registry struct {
	mu    sync.RWMutex
	flows map[string]*Entry
}

// New returns an empty registry.
func New() *Registry { return &Registry{flows: map[string]*Entry{}} }

// Default is the registry the package-level functions use.
var Default = New()

// Register adds f under name. Names are 1-128 characters of letters,
// digits and _ . : - starting with a letter or digit. It fails with
// ErrInvalid for a bad name, a nil flow or a bad option value (see
// Policy), and with ErrDuplicate when the name is taken.
//
// Names that begin with "flows." are reserved for this module's own flows
// (notify's "flows.notify", which notify.Notifier.Register adds): Register
// fails with ErrInvalid for any other flow named so. A worker that lacks
// such a flow hands its tasks back for another worker rather than fail
// them as unknown (see queue.WorkerConfig.Registry), and notify never
// notifies about a task of "flows.notify": a flow of the host's named so
// would have its tasks wait for hours on a worker without it, or go
// unnoticed, or take the name of a library flow added later.
func (r *Registry) Register(name string, f flow.Flow, opts ...Option) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%w: name %q must be 1-128 letters, digits, _ . : - starting with a letter or digit", ErrInvalid, name)
	}
	f, library := libflow.Unmark(f)
	if libflow.Reserved(name) && !library {
		return fmt.Errorf("%w: name %q: names beginning %q are reserved for this module's own flows; give the flow another name", ErrInvalid, name, libflow.Prefix)
	}
	if isNil(f) {
		return fmt.Errorf("%w: flow %q is nil", ErrInvalid, name)
	}
	e := &Entry{Info: Info{Name: name, Schema: flow.SchemaOf(f)}, Flow: f}
	if d, ok := f.(flow.Describer); ok {
		e.Description = d.Description()
	}
	for _, o := range opts {
		o(&e.Info)
	}
	if err := e.err; err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.flows[name]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicate, name)
	}
	r.flows[name] = e
	return nil
}

// isNil reports whether f is nil or holds a nil pointer, func, map, slice,
// channel or interface, which would panic when run.
func isNil(f flow.Flow) bool {
	if f == nil {
		return true
	}
	switch v := reflect.ValueOf(f); v.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Slice, reflect.Chan, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// MustRegister is Register that panics on error, for start-up code where a
// misconfiguration must stop the program.
func (r *Registry) MustRegister(name string, f flow.Flow, opts ...Option) {
	if err := r.Register(name, f, opts...); err != nil {
		panic(err)
	}
}

// Lookup returns the flow registered under name, or an error wrapping
// ErrUnknownFlow.
func (r *Registry) Lookup(name string) (*Entry, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.flows[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownFlow, name)
	}
	return e, nil
}

// List returns the Info of every registered flow but the internal ones
// (see Internal), sorted by name. The label maps are copies; the schemas
// are shared and must not be modified.
func (r *Registry) List() []Info {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Info, 0, len(r.flows))
	for _, name := range slices.Sorted(maps.Keys(r.flows)) {
		info := r.flows[name].Info
		if info.Internal {
			continue
		}
		info.Labels = maps.Clone(info.Labels)
		out = append(out, info)
	}
	return out
}

// Register adds f to the Default registry.
func Register(name string, f flow.Flow, opts ...Option) error {
	return Default.Register(name, f, opts...)
}

// MustRegister adds f to the Default registry and panics on error.
func MustRegister(name string, f flow.Flow, opts ...Option) {
	Default.MustRegister(name, f, opts...)
}

// Lookup finds a flow in the Default registry.
func Lookup(name string) (*Entry, error) { return Default.Lookup(name) }

// List lists the flows of the Default registry.
func List() []Info { return Default.List() }
