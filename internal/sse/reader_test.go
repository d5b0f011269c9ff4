package sse_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/sse"
)

// readAll reads every message of r and the error that ended it.
func readAll(r *sse.Reader) ([]sse.Message, error) {
	var out []sse.Message
	for {
		m, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func TestReader(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []sse.Message
		wantErr error
	}{
		{name: "empty stream", in: "", wantErr: io.EOF},
		{name: "blank lines only", in: "\n\r\n\r", wantErr: io.EOF},
		{
			name: "one message",
			in:   "id: 1\nevent: token\ndata: {\"token\":\"a\"}\n\n",
			want: []sse.Message{{ID: "1", HasID: true, Event: "token", Data: `{"token":"a"}`, HasData: true}},
		},
		{
			name: "data lines joined with LF",
			in:   "data: one\ndata: two\ndata:\ndata: three\n\n",
			want: []sse.Message{{Data: "one\ntwo\n\nthree", HasData: true}},
		},
		{
			name: "empty data dispatches",
			in:   "data\n\n",
			want: []sse.Message{{Data: "", HasData: true}},
		},
		{
			name: "CRLF, CR and LF line ends",
			in:   "id: 1\r\ndata: a\rdata: b\n\r\nid: 2\rdata: c\r\r",
			want: []sse.Message{
				{ID: "1", HasID: true, Data: "a\nb", HasData: true},
				{ID: "2", HasID: true, Data: "c", HasData: true},
			},
		},
		{
			name: "only one leading space is stripped",
			in:   "data:  two spaces\ndata:none\nevent:\tx\n\n",
			want: []sse.Message{{Event: "\tx", Data: " two spaces\nnone", HasData: true}},
		},
		{
			name: "value keeps later colons",
			in:   "data: a: b:c\n\n",
			want: []sse.Message{{Data: "a: b:c", HasData: true}},
		},
		{
			name: "field without colon has an empty value",
			in:   "id\nevent\ndata\n\n",
			want: []sse.Message{{ID: "", HasID: true, Data: "", HasData: true}},
		},
		{
			name: "comments and heartbeats",
			in:   ": ping\n\n:\n:  two\ndata: x\n\n",
			want: []sse.Message{
				{Comments: []string{"ping"}},
				{Comments: []string{"", " two"}, Data: "x", HasData: true},
			},
		},
		{
			name: "retry hint alone",
			in:   "retry: 3000\n\n",
			want: []sse.Message{{Retry: "3000"}},
		},
		{
			name: "invalid retry values are ignored",
			in:   "retry: 12a\n\nretry:\n\nretry: -1\n\nretry: 7\nretry: x\n\n",
			want: []sse.Message{{}, {}, {}, {Retry: "7"}},
		},
		{
			name: "id with NUL is ignored",
			in:   "id: 5\nid: a\x00b\ndata: x\n\n",
			want: []sse.Message{{ID: "5", HasID: true, Data: "x", HasData: true}},
		},
		{
			name: "last field wins",
			in:   "id: 1\nid: 2\nevent: a\nevent: b\ndata: x\n\n",
			want: []sse.Message{{ID: "2", HasID: true, Event: "b", Data: "x", HasData: true}},
		},
		{
			name: "unknown fields are ignored",
			in:   "foo: bar\nData: x\n\ndata: y\n\n",
			want: []sse.Message{{}, {Data: "y", HasData: true}},
		},
		{
			name: "byte order mark is skipped once",
			in:   "\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n",
			want: []sse.Message{{Data: "a", HasData: true}, {}},
		},
		{
			name:    "stream ends inside a block",
			in:      "data: a\n\ndata: b\n",
			want:    []sse.Message{{Data: "a", HasData: true}},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "stream ends inside a line",
			in:      "data: a\n\ndata: b",
			want:    []sse.Message{{Data: "a", HasData: true}},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name: "long line",
			in:   "data: " + strings.Repeat("x", 5000) + "\n\n",
			want: []sse.Message{{Data: strings.Repeat("x", 5000), HasData: true}},
		},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"data+EOF": iotest.DataErrReader,
	}
	for _, tt := range tests {
		for rname, wrap := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				got, err := readAll(sse.NewReader(wrap(strings.NewReader(tt.in))))
				wantErr := tt.wantErr
				if wantErr == nil {
					wantErr = io.EOF
				}
				assert.ErrorIs(t, err, wantErr)
				assert.Equal(t, tt.want, got)
			})
		}
	}
}

func TestReaderReturnsReadErrors(t *testing.T) {
	boom := errors.New("boom")
	r := sse.NewReader(io.MultiReader(strings.NewReader("data: a\n\ndata: b\n"), iotest.ErrReader(boom)))
	m, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, "a", m.Data)
	_, err = r.Next()
	assert.ErrorIs(t, err, boom)
	_, err = r.Next()
	assert.ErrorIs(t, err, boom, "the error sticks")
}

func TestReaderLastEventID(t *testing.T) {
	r := sse.NewReader(strings.NewReader("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"))
	want := []struct{ id, last string }{{"1", "1"}, {"", "1"}, {"", ""}}
	for i, w := range want {
		m, err := r.Next()
		require.NoError(t, err)
		assert.Equal(t, w.id, m.ID, "message %d", i)
		assert.Equal(t, w.last, r.LastEventID(), "message %d: an EventSource keeps the id until a block sets it", i)
	}
}

func FuzzReader(f *testing.F) {
	for _, seed := range []string{
		"", "data: a\n\n", "id: 1\r\nevent: e\r\ndata: x\r\n\r\n", "\xEF\xBB\xBF: c\r\r", "retry: 10\n\n", "data", "id: \x00\n\n", "\r\n\r",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		whole, errWhole := readAll(sse.NewReader(strings.NewReader(in)))
		bytewise, errBytewise := readAll(sse.NewReader(iotest.OneByteReader(strings.NewReader(in))))
		require.Error(t, errWhole)
		assert.Equal(t, errWhole, errBytewise, "how the input is split must not matter")
		assert.Equal(t, whole, bytewise, "how the input is split must not matter")
		for _, m := range whole {
			if !m.HasData {
				assert.Empty(t, m.Data, "data without a data field: %+v", m)
			}
			assert.Empty(t, strings.Trim(m.Retry, "0123456789"), "retry is digits only: %q", m.Retry)
			assert.NotContains(t, m.Event, "\n")
			assert.NotContains(t, m.ID, "\x00")
		}
	})
}

// A client follows a task's stream: default messages carry snapshots,
// "token" messages carry tokens, and comment-only blocks are heartbeats.
func ExampleReader() {
	stream := "retry: 3000\n\n" +
		": ping\n\n" +
		"id: 1\ndata: {\"state\":\"PROGRESS\"}\n\n" +
		"id: 2\nevent: token\ndata: {\"token\":\"Hi\"}\n\n"
	r := sse.NewReader(strings.NewReader(stream))
	for {
		m, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		switch {
		case m.HasData:
			fmt.Printf("id %s event %q: %s\n", m.ID, m.Event, m.Data)
		case m.Retry != "":
			fmt.Println("retry after", m.Retry, "ms")
		default:
			fmt.Println("comments", m.Comments)
		}
	}
	// Output:
	// retry after 3000 ms
	// comments [ping]
	// id 1 event "": {"state":"PROGRESS"}
	// id 2 event "token": {"token":"Hi"}
}
