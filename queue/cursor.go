package queue

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cursor is a position in a listing: just after the task ID, which
// entered its current state at At (TaskSummary.ChangedAt). Listings are
// ordered by that time to the millisecond, newest first, then by id,
// greatest first; a cursor stays valid however many tasks come and go.
// Backends that list their tasks (TaskLister) issue and read their
// cursors with it.
type Cursor struct {
	At time.Time
	ID string
}

// CursorOf is the cursor just after the task s.
func CursorOf(s *TaskSummary) Cursor { return Cursor{At: s.ChangedAt(), ID: s.ID} }

// String encodes c as "<Unix ms>.<id>".
func (c Cursor) String() string {
	return strconv.FormatInt(c.At.UnixMilli(), 10) + "." + c.ID
}

// maxCursorMilli is the last millisecond of the year 9999, the latest
// time a task can have in a listing: JSON and RFC 3339 times end there.
const maxCursorMilli = 253402300799999

// ParseCursor decodes what Cursor.String writes; anything else gives an
// error wrapping ErrInvalidQuery, and so does a time no listing issues,
// past the year 9999 (no task's time is: JSON and RFC 3339 times end
// there). Any position up to then is one: a cursor holds no more than
// the position of the task it follows, which the filters of each page
// and the access checks of the caller apply to, so that a cursor made
// up gives no more than a time range (ListOptions.Until) gives, and
// the page after a position that no task follows is empty.
func ParseCursor(s string) (Cursor, error) {
	ms, id, ok := strings.Cut(s, ".")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || n < 0 || !ValidID(id) {
		return Cursor{}, fmt.Errorf("%w: malformed cursor %q", ErrInvalidQuery, s)
	}
	if n > maxCursorMilli {
		return Cursor{}, fmt.Errorf("%w: cursor %q is past the year 9999, where no task is listed", ErrInvalidQuery, s)
	}
	return Cursor{At: time.UnixMilli(n).UTC(), ID: id}, nil
}

// Precedes reports whether the position c comes before the task s in a
// listing's order (s is older, or as old with a smaller id): the tasks a
// page that starts at c lists.
func (c Cursor) Precedes(s *TaskSummary) bool {
	at, cat := s.ChangedAt().UnixMilli(), c.At.UnixMilli()
	return at < cat || at == cat && s.ID < c.ID
}

// compareListed orders a and b as a listing does: newest first (to the
// millisecond), then by id, greatest first.
func compareListed(a, b *TaskSummary) int {
	at, bt := a.ChangedAt().UnixMilli(), b.ChangedAt().UnixMilli()
	switch {
	case at > bt:
		return -1
	case at < bt:
		return 1
	}
	return strings.Compare(b.ID, a.ID)
}
