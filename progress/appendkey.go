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
	key, _ := ctx.Value(appendKeyCtx{}).(string)
	return key
}
