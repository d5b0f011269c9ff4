package progress

import "context"

// appendKeyCtx is the context key of an append key.
type appendKeyCtx struct{}

// WithAppendKey returns a copy of ctx that carries key as the append key
// of the Store.Append called with it: a store that honours append keys
// records a call whose key is that of the task's last keyed call only
// once (see Store.Append), so that a call whose outcome is unknown
// (ErrMaybeSent) can be made again. A key must be unique to the call
// among the task's keyed calls: TaskReporter gives each of its batches
// one made of a random prefix of its own and a sequence number. An empty
// key is no key. Stores that wrap another pass ctx on unchanged, and with
// it the key.
func WithAppendKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, appendKeyCtx{}, key)
}

// AppendKey returns the append key ctx carries (see WithAppendKey), or
// "" for none.
func AppendKey(ctx context.Context) string {
	switch key := ctx.Value(appendKeyCtx{}).(type) {
	case string:
		return key
	case *string: // from a keyedContext
		return *key
	}
	return ""
}

// keyedContext is ctx with an append key, as WithAppendKey gives it, made
// without an allocation where it is a field of a value already allocated
// (see batch.context).
type keyedContext struct {
	context.Context
	key string
}

// Value returns the append key for appendKeyCtx{}, by its address (a
// string would be copied to the heap at each call), and asks the context
// it wraps for any other key.
func (c *keyedContext) Value(k any) any {
	if _, ok := k.(appendKeyCtx); ok {
		return &c.key
	}
	return c.Context.Value(k)
}
