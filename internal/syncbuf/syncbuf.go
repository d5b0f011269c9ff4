// Package syncbuf is a bytes.Buffer that goroutines may share: what tests
// hand a logger or a child process's output, and read while it writes.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects what is written to it. Its zero value is empty and
// ready; it is safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what has been written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
