package notify_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
)

func TestRendererDefaults(t *testing.T) {
	r, err := notify.NewRenderer(notify.Templates{})
	require.NoError(t, err)
	m, err := r.Render(sampleNotification("email"))
	require.NoError(t, err)
	assert.Equal(t, "[flows] poem_flow succeeded (0123456789abcdef0123456789abcdef)", m.Subject)
	assert.Contains(t, m.Text, "Task 0123456789abcdef0123456789abcdef of flow poem_flow ended SUCCESS after 1 attempt(s).")
	assert.Contains(t, m.Text, "Status: Completed")
	assert.Contains(t, m.Text, "The sea <hums> & the deep replies.", "the text is not escaped")
	assert.Contains(t, m.HTML, "<pre>The sea &lt;hums&gt; &amp; the deep replies.</pre>", "the HTML is")

	failed := sampleNotification("email")
	failed.State = progress.StateFailure
	failed.Snapshot.Details.Status = "failed after 3 attempts: model\r\nBcc: victim@example.com"
	failed.Snapshot.Details.FinalResult = nil
	m, err = r.Render(failed)
	require.NoError(t, err)
	assert.Equal(t, "[flows] poem_flow failed (0123456789abcdef0123456789abcdef)", m.Subject)
	assert.NotContains(t, m.Text, "Result:")
}

func TestRendererCustom(t *testing.T) {
	r, err := notify.NewRenderer(notify.Templates{
		Subject: "{{.Flow}}: {{.Status}}\nBcc: someone@example.com",
		Text:    "{{.Result}} in {{.Attempts}}",
		HTML:    "<b>{{.Result}}</b>",
	})
	require.NoError(t, err)
	n := sampleNotification("email")
	n.Snapshot.Details.Status = strings.Repeat("x", 300)
	m, err := r.Render(n)
	require.NoError(t, err)
	assert.NotContains(t, m.Subject, "\n", "no header can be added through the subject")
	assert.Equal(t, 200, len([]rune(m.Subject)))
	assert.Equal(t, "The sea <hums> & the deep replies. in 1", m.Text)
	assert.Equal(t, "<b>The sea &lt;hums&gt; &amp; the deep replies.</b>", m.HTML)
}

func TestRendererErrors(t *testing.T) {
	for name, tpl := range map[string]notify.Templates{
		"subject": {Subject: "{{.Flow"},
		"text":    {Text: "{{if}}"},
		"HTML":    {HTML: "{{end}}"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := notify.NewRenderer(tpl)
			assert.ErrorContains(t, err, name+" template")
		})
	}
}

// TestRendererTriesTemplates: a template that parses but cannot be
// executed for a finished task (a field the Notification lacks, as a
// misspelt {{.TaskId}}) is refused by NewRenderer, at start-up, rather
// than failing every notification; one that holds for a task with no
// steps nor result passes.
func TestRendererTriesTemplates(t *testing.T) {
	for name, tpl := range map[string]notify.Templates{
		"subject":               {Subject: "{{.Flow}} {{.TaskId}}"},
		"text":                  {Text: "{{.Snapshot.Details.NoSuchField}}"},
		"HTML":                  {HTML: `{{template "footer"}}`},
		"text on failure only":  {Text: `{{if eq .State "FAILURE"}}{{.Reason}}{{end}}`},
		"HTML on an empty list": {HTML: `{{index .Snapshot.Details.StepResults 0}}`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := notify.NewRenderer(tpl)
			assert.ErrorContains(t, err, strings.Fields(name)[0]+" template")
		})
	}
	_, err := notify.NewRenderer(notify.Templates{
		Subject: `{{.Flow}} {{if eq .State "SUCCESS"}}done{{else}}failed: {{.Status}}{{end}}`,
		Text:    `{{range .Snapshot.Details.StepResults}}{{.Message}}{{end}}{{with .Result}}{{.}}{{end}} {{.Duration}} {{.FinishedAt.Format "2006"}}`,
		HTML:    `{{with .Snapshot.Details.StepResults}}{{(index . 0).Message}}{{end}}`,
	})
	assert.NoError(t, err)
}

func TestNotificationResult(t *testing.T) {
	n := sampleNotification("x")
	for raw, want := range map[string]string{
		`"text"`:       "text",
		`{"a": 1}`:     `{"a": 1}`,
		`42`:           "42",
		`null`:         "",
		``:             "",
		`"line\nnext"`: "line\nnext",
	} {
		n.Snapshot.Details.FinalResult = []byte(raw)
		assert.Equal(t, want, n.Result(), raw)
	}
	assert.Equal(t, "2s", n.Duration().String())
	assert.Equal(t, "task.succeeded", n.EventType())
	n.State = progress.StateFailure
	assert.Equal(t, "task.failed", n.EventType())
}

// TestRendererDefaultsTellARequeuedTask: the default texts name the dead
// task a re-queued one came from, and say nothing of it otherwise.
func TestRendererDefaultsTellARequeuedTask(t *testing.T) {
	r, err := notify.NewRenderer(notify.Templates{})
	require.NoError(t, err)
	m, err := r.Render(sampleNotification("email"))
	require.NoError(t, err)
	assert.NotContains(t, m.Text, "e-queued")
	assert.NotContains(t, m.HTML, "e-queued")

	n := sampleNotification("email")
	n.RequeuedFrom = "fedcba9876543210fedcba9876543210"
	m, err = r.Render(n)
	require.NoError(t, err)
	assert.Contains(t, m.Text, "Re-queued from task fedcba9876543210fedcba9876543210.")
	assert.Contains(t, m.HTML, "Re-queued from task <code>fedcba9876543210fedcba9876543210</code>.")
}
