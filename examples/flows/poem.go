package flows

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/flowsrun/flows/flow"
)

// poemTheme is one theme the offline poet knows, with the poem it writes
// about it.
type poemTheme struct {
	name  string
	lines []string
}

// poemThemes is the offline poet's whole repertoire.
var poemThemes = []poemTheme{
	{"the sea at dawn", []string{
		"Grey water wakes beneath a paling sky,",
		"the gulls unstitch the quiet as they cry;",
		"the tide brings back what night had borrowed, slow,",
		"and every shell remembers where to go.",
	}},
	{"a city in the rain", []string{
		"The pavements shine with borrowed neon light,",
		"umbrellas bloom and hurry through the night;",
		"a tram hums past, its windows fogged and warm,",
		"and someone hums a tune against the storm.",
	}},
	{"an old oak tree", []string{
		"It keeps the rings of every year it grew,",
		"a ledger kept in bark the winters knew;",
		"the children climb where once their parents climbed,",
		"and acorns fall, unhurried and on time.",
	}},
	{"a queue of patient tasks", []string{
		"Each waits its turn with nothing much to say,",
		"until a worker leads the first away;",
		"it logs each step and fills the progress bar,",
		"then tells the waiting browser where things are.",
	}},
}

// Poem returns poem_flow: a flow without inputs that chooses a theme,
// writes a four-line poem about it, streams the poem as tokens and returns
// it. The theme depends on the task id, so different tasks get different
// poems and a retried task gets the same one.
func Poem(cfg Config) flow.Flow {
	return flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		rep := t.Progress

		rep.Progress(5, "Choosing a theme")
		rep.Log("Choosing a theme")
		if err := pause(ctx, cfg.step()); err != nil {
			return nil, err
		}
		theme := chooseTheme(t.ID)
		rep.Log(fmt.Sprintf("Theme chosen: %s", theme.name))

		rep.Progress(30, "Writing the poem")
		rep.Log("Writing the poem")
		if err := pause(ctx, cfg.step()); err != nil {
			return nil, err
		}
		poem := strings.Join(theme.lines, "\n")
		if err := stream(ctx, rep, poem, cfg.token(), 30, 95); err != nil {
			return nil, err
		}
		rep.Log("Poem written")
		return poem, nil
	})
}

// chooseTheme picks a theme from the task id.
func chooseTheme(taskID string) poemTheme {
	h := fnv.New32a()
	_, _ = h.Write([]byte(taskID))
	return poemThemes[h.Sum32()%uint32(len(poemThemes))]
}
