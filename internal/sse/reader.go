// Package sse reads Server-Sent Events streams (text/event-stream) as the
// WHATWG HTML standard's event-stream interpretation describes them. It is
// the one parser the tests, examples and tools of this module use to
// follow a task's stream.
//
// A stream is a sequence of blocks, each ended by a blank line. Reader
// returns every block it reads as a Message, including blocks an
// EventSource would not dispatch (a comment-only heartbeat, a lone retry
// hint), so that callers can check those too; Message.HasData tells the
// blocks an EventSource dispatches as events from the others.
package sse

import (
	"bytes"
	"io"
)

// Message is one block of an event stream: the fields read up to a blank
// line. Field values have a single leading space removed.
type Message struct {
	// ID is the value of the block's last valid id field; HasID reports
	// whether the block had one. An id field whose value contains a NUL
	// is ignored, as an EventSource ignores it.
	ID    string
	HasID bool
	// Event is the value of the block's last event field; empty means the
	// default event type, "message".
	Event string
	// Data is the values of the block's data fields joined with "\n";
	// HasData reports whether there was at least one data field, which is
	// when an EventSource dispatches the block as an event.
	Data    string
	HasData bool
	// Retry is the value of the block's last valid retry field, the
	// reconnection time in milliseconds as ASCII digits; empty when the
	// block had none. A retry field with anything but digits is ignored.
	Retry string
	// Comments holds the block's comment lines (those starting with ':'),
	// without the colon and one space after it, in order.
	Comments []string
}

// minBuffer is the size of a Reader's buffer before any long line grows it.
const minBuffer = 1024

// Reader reads the messages of an event stream; make one with NewReader. It buffers its input: it
// may read past the last message it returned. A line is held in memory
// whole, however long it is.
type Reader struct {
	r          io.Reader
	buf        []byte
	start, end int   // buf[start:end] is read but not yet consumed
	err        error // the error that ended r, returned once buf is consumed
	skipLF     bool  // the last line ended with CR: a LF right after it is part of that line end
	bomChecked bool
	lastID     string
	data       []byte // the data of the block being read
}

// NewReader returns a Reader of the event stream r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, buf: make([]byte, minBuffer)}
}

// LastEventID returns the last event ID as an EventSource keeps it: the
// value of the last valid id field read so far, in any block, including
// an empty one that resets it.
func (r *Reader) LastEventID() string { return r.lastID }

// Next returns the next block of the stream that has at least one line.
// Blank lines between blocks are skipped. At the end of the stream Next
// returns io.EOF, or io.ErrUnexpectedEOF if the stream ended inside a
// block (which an EventSource would discard); a read error of the
// underlying reader is returned as is.
func (r *Reader) Next() (Message, error) {
	var m Message
	started := false
	r.data = r.data[:0]
	for {
		line, err := r.readLine()
		if err != nil {
			if err == io.EOF && (started || len(line) > 0) {
				return Message{}, io.ErrUnexpectedEOF
			}
			return Message{}, err
		}
		if len(line) == 0 {
			if !started {
				continue
			}
			if m.HasData {
				m.Data = string(r.data)
			}
			return m, nil
		}
		started = true
		r.field(&m, line)
	}
}

// field applies one non-blank line to m.
func (r *Reader) field(m *Message, line []byte) {
	if line[0] == ':' {
		m.Comments = append(m.Comments, string(trimSpace(line[1:])))
		return
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], trimSpace(line[i+1:])
	}
	switch string(name) {
	case "data":
		if m.HasData {
			r.data = append(r.data, '\n')
		}
		r.data = append(r.data, value...)
		m.HasData = true
	case "id":
		if bytes.IndexByte(value, 0) >= 0 {
			return
		}
		m.ID, m.HasID = string(value), true
		r.lastID = m.ID
	case "event":
		m.Event = string(value)
	case "retry":
		if len(value) == 0 {
			return
		}
		for _, c := range value {
			if c < '0' || c > '9' {
				return
			}
		}
		m.Retry = string(value)
	}
}

// trimSpace removes one leading space.
func trimSpace(b []byte) []byte {
	if len(b) > 0 && b[0] == ' ' {
		return b[1:]
	}
	return b
}

// readLine returns the next line without its end (CRLF, LF or CR). The
// line is valid until the next call. At the end of the stream it returns
// the unterminated rest, if any, with the error that ended the stream.
func (r *Reader) readLine() ([]byte, error) {
	scanned := 0 // bytes of buf[start:end] known to hold no line end
	for {
		if r.skipLF && r.start < r.end {
			if r.buf[r.start] == '\n' {
				r.start++
			}
			r.skipLF = false
		}
		if !r.bomChecked {
			// A byte order mark may open the stream; decide once enough
			// bytes are there to tell.
			b := r.buf[r.start:r.end]
			if bytes.HasPrefix(b, bom) {
				r.start += len(bom)
				r.bomChecked = true
			} else if r.err != nil || !bytes.HasPrefix(bom, b) {
				r.bomChecked = true
			}
		}
		if r.bomChecked && !r.skipLF {
			b := r.buf[r.start:r.end]
			i := bytes.IndexByte(b[scanned:], '\n')
			if i >= 0 {
				i += scanned
			} else {
				i = len(b)
			}
			if j := bytes.IndexByte(b[scanned:i], '\r'); j >= 0 {
				i = scanned + j
			}
			if i < len(b) {
				line := b[:i]
				r.start += i + 1
				r.skipLF = b[i] == '\r'
				return line, nil
			}
			scanned = len(b)
		}
		if r.err != nil {
			line := r.buf[r.start:r.end]
			r.start = r.end
			return line, r.err
		}
		r.fill()
	}
}

var bom = []byte("\xEF\xBB\xBF")

// fill reads more input into buf, moving or growing it as needed.
func (r *Reader) fill() {
	if r.start > 0 {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	if r.end == len(r.buf) {
		r.buf = append(r.buf, make([]byte, len(r.buf))...)
	}
	for range 100 {
		n, err := r.r.Read(r.buf[r.end:])
		r.end += n
		if err != nil {
			r.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	r.err = io.ErrNoProgress
}
