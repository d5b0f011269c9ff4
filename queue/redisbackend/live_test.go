package redisbackend

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// TestLiveMessage feeds published messages to a subscription and checks
// what it delivers and when it asks for the stream instead.
func TestLiveMessage(t *testing.T) {
	t.Parallel()
	const (
		one   = `{"type":"status","status":"one"}`
		two   = `{"type":"progress","progress":40}`
		three = `{"type":"state","state":"SUCCESS","status":"Completed","result":null}`
	)
	tests := []struct {
		name      string
		cursor    string
		raw       string
		delivered []string // ids
		done, ok  bool
	}{
		{"a batch after the cursor", "1-1", "1-1 1-3\n" + one + "\n" + two, []string{"1-2", "1-3"}, false, true},
		{"the first events", "", " 1-0\n" + one, []string{"1-0"}, false, true},
		{"events already delivered are skipped", "1-2", "1-1 1-3\n" + one + "\n" + two, []string{"1-3"}, false, true},
		{"all already delivered", "1-3", "1-1 1-3\n" + one + "\n" + two, nil, false, true},
		{"a gap before the batch", "1-1", "1-2 1-3\n" + two, nil, false, false},
		{"a new element", "1-7", "1-7 2-1\n" + one + "\n" + two, []string{"2-0", "2-1"}, false, true},
		{"the terminal event ends it", "1-2", "1-2 1-4\n" + two + "\n" + three, []string{"1-3", "1-4"}, true, true},
		{"garbage", "1-1", `{"id":"1-2","prev":"1-1","event":{}}`, nil, false, false},
		{"no last id", "1-1", "1-1\n" + one, nil, false, false},
		{"more events than ids", "", " 1-0\n" + one + "\n" + two, nil, false, false},
		{"undecodable event", "1-1", "1-1 1-2\n{oops", nil, false, false},
		{"tagged ids", "1-0-aaaa", "1-0-aaaa 2-1-bbbb\n" + one + "\n" + two, []string{"2-0-bbbb", "2-1-bbbb"}, false, true},
		{"a cursor without a tag (an earlier version's)", "1-0", "1-0-aaaa 2-0-bbbb\n" + one, []string{"2-0-bbbb"}, false, true},
		{"after an element with another tag", "1-0-aaaa", "1-0-cccc 2-0-bbbb\n" + one, nil, false, false},
		{"the cursor's element with another tag", "2-0-aaaa", "1-0-cccc 2-0-bbbb\n" + one, nil, false, false},
		{"an earlier version's message after a tagged cursor", "1-0-aaaa", "1-0 2-0\n" + one, []string{"2-0-" + elementTag(one)}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cursor, err := parseEventID(tt.cursor)
			require.NoError(t, err)
			out := make(chan progress.Event, 10)
			s := &subscription{
				b:      &Backend{log: slog.New(slog.DiscardHandler)},
				taskID: "t",
				cursor: cursor,
				out:    out,
			}
			done, ok := s.live(context.Background(), tt.raw)
			assert.Equal(t, tt.done, done, "done")
			assert.Equal(t, tt.ok, ok, "ok")
			close(out)
			var got []string
			for e := range out {
				got = append(got, e.ID)
			}
			// The events of a message without tags (an earlier
			// version's writer's) get the tag of their element, as a
			// read of the event log gives them.
			header, element, _ := strings.Cut(tt.raw, "\n")
			if strings.Count(header, "-") <= 2 {
				for i, id := range tt.delivered {
					if strings.Count(id, "-") == 1 {
						tt.delivered[i] = id + "-" + elementTag(element)
					}
				}
			}
			assert.Equal(t, tt.delivered, got)
			if len(tt.delivered) > 0 {
				assert.Equal(t, tt.delivered[len(tt.delivered)-1], s.cursor.String(), "cursor moved")
			}
		})
	}
}
