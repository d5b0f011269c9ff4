package queue_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/queue"
)

// idSpec is the documented form of a task id, as the oracle of ValidID.
var idSpec = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

var idCases = []string{
	"", "a", "Z", "0", "_", "-", queue.NewID(), "task-1_A", strings.Repeat("x", 64), strings.Repeat("x", 65),
	"a b", "a/b", "a.b", "a:b", "{a}", "é", "a\x00", "a\n", "ab\xff",
}

func TestValidID(t *testing.T) {
	for _, id := range idCases {
		assert.Equal(t, idSpec.MatchString(id), queue.ValidID(id), "%q", id)
	}
}

func FuzzValidID(f *testing.F) {
	for _, id := range idCases {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		assert.Equal(t, idSpec.MatchString(id), queue.ValidID(id), "%q", id)
	})
}
