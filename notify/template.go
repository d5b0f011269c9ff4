package notify

import (
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode/utf8"

	"github.com/flowsrun/flows/progress"
)

// Templates are the texts of a message about a finished task, as Go
// templates executed with the *Notification: {{.TaskID}}, {{.Flow}},
// {{.RequeuedFrom}} (the dead task a re-queued one came from, "" for
// none), {{.State}}, {{.Status}}, {{.Result}}, {{.Attempts}}, {{.Duration}},
// {{.FinishedAt}}, {{.Snapshot.Details.StepResults}} and so on. Subject and
// Text are text/template templates, HTML an html/template one, which
// escapes what it inserts. A zero field takes the default below.
type Templates struct {
	// Subject is the subject line. Line breaks in its output become
	// spaces, and it is cut to 200 characters.
	Subject string
	// Text is the plain-text body.
	Text string
	// HTML is the HTML body, sent as an alternative to Text.
	HTML string
}

// The default templates.
const (
	DefaultSubject = `[flows] {{.Flow}} {{if eq .State "SUCCESS"}}succeeded{{else}}failed{{end}} ({{.TaskID}})`
	DefaultText    = `Task {{.TaskID}} of flow {{.Flow}} ended {{.State}} after {{.Attempts}} attempt(s).
{{with .RequeuedFrom}}Re-queued from task {{.}}.
{{end}}Status: {{.Status}}
{{with .Result}}
Result:
{{.}}
{{end}}`
	DefaultHTML = `<!DOCTYPE html>
<html><body>
<p>Task <code>{{.TaskID}}</code> of flow <strong>{{.Flow}}</strong> ended <strong>{{.State}}</strong> after {{.Attempts}} attempt(s).</p>
{{with .RequeuedFrom}}<p>Re-queued from task <code>{{.}}</code>.</p>
{{end}}<p>Status: {{.Status}}</p>
{{with .Result}}<h2>Result</h2>
<pre>{{.}}</pre>{{end}}
</body></html>
`
)

// maxSubject is the most characters a rendered subject keeps.
const maxSubject = 200

// Message is a rendered message.
type Message struct {
	Subject string
	Text    string
	HTML    string
}

// Renderer renders Templates. Make it with NewRenderer; it is safe for
// concurrent use.
type Renderer struct {
	subject, text *texttemplate.Template
	html          *htmltemplate.Template
}

// NewRenderer parses t, taking the default for each zero field, and
// tries the templates on a task that succeeded and one that failed,
// neither with steps nor result (as a task cancelled before it ran). A
// template that does not parse, or fails for them (a field Notification
// lacks, such as a misspelt {{.TaskId}}; a template not defined; an index
// out of range) is an error here, at configuration time, rather than in
// every notification.
func NewRenderer(t Templates) (*Renderer, error) {
	if t.Subject == "" {
		t.Subject = DefaultSubject
	}
	if t.Text == "" {
		t.Text = DefaultText
	}
	if t.HTML == "" {
		t.HTML = DefaultHTML
	}
	r := &Renderer{}
	var err error
	if r.subject, err = texttemplate.New("subject").Option("missingkey=error").Parse(t.Subject); err != nil {
		return nil, fmt.Errorf("notify: subject template: %w", err)
	}
	if r.text, err = texttemplate.New("text").Option("missingkey=error").Parse(t.Text); err != nil {
		return nil, fmt.Errorf("notify: text template: %w", err)
	}
	if r.html, err = htmltemplate.New("html").Option("missingkey=error").Parse(t.HTML); err != nil {
		return nil, fmt.Errorf("notify: HTML template: %w", err)
	}
	for _, state := range []progress.State{progress.StateSuccess, progress.StateFailure} {
		if _, err := r.Render(trial(state)); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// trial is the notification NewRenderer tries the templates on: a task
// that ended in state, with a status line but no steps nor result.
func trial(state progress.State) *Notification {
	status := "Completed"
	if state != progress.StateSuccess {
		status = "Cancelled"
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const task = "00000000000000000000000000000000"
	return &Notification{
		ID: ID(task, "trial"), Channel: "trial", TaskID: task, Flow: "trial", State: state,
		Snapshot:   progress.Snapshot{State: state, Details: progress.Details{Status: status}},
		Attempts:   1,
		EnqueuedAt: at, StartedAt: at, FinishedAt: at.Add(time.Second),
	}
}

// Render executes the templates with n.
func (r *Renderer) Render(n *Notification) (Message, error) {
	var subject, text, html strings.Builder
	if err := r.subject.Execute(&subject, n); err != nil {
		return Message{}, fmt.Errorf("notify: subject template: %w", err)
	}
	if err := r.text.Execute(&text, n); err != nil {
		return Message{}, fmt.Errorf("notify: text template: %w", err)
	}
	if err := r.html.Execute(&html, n); err != nil {
		return Message{}, fmt.Errorf("notify: HTML template: %w", err)
	}
	return Message{Subject: oneLine(subject.String(), maxSubject), Text: text.String(), HTML: html.String()}, nil
}

// oneLine joins s's lines with spaces, trims it and cuts it to max
// characters, so that a status line cannot add a header to a message.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	return string([]rune(s)[:max-1]) + "…"
}
