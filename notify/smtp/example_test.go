package smtp_test

import (
	"context"
	"log"
	"os"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/notify/smtp"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// An e-mail about every finished task.
func ExampleNew() {
	email, err := smtp.New(smtp.Config{
		URL:  os.Getenv("SMTP_URL"), // e.g. smtp://user:pass@mail.example.com:587?starttls=required
		From: "Flows <flows@example.com>",
		To:   []string{"ops@example.com"},
		Templates: notify.Templates{
			Subject: `{{.Flow}} {{.State}}: {{.Status}}`,
		},
	})
	if err != nil {
		log.Fatal(err) // a bad URL or address stops the host at start-up
	}
	var broker *queue.Broker // the host's broker
	n, err := notify.New(notify.Config{Queue: broker, Channels: []notify.Channel{email}})
	if err != nil {
		log.Fatal(err)
	}
	reg := registry.New()
	if err := n.Register(reg); err != nil { // the workers' registry
		log.Fatal(err)
	}
}

// A flow that sends an e-mail as one of its steps.
func ExampleSender_Send() {
	sender, err := smtp.New(smtp.Config{URL: "smtps://user:pass@mail.example.com", From: "flows@example.com"})
	if err != nil {
		log.Fatal(err)
	}
	type input struct {
		Email string `json:"email"`
	}
	report := flow.Typed(func(ctx context.Context, in input, t *flow.Task) (string, error) {
		text := "Your report is ready."
		err := sender.Send(ctx, smtp.Message{
			To:      []string{in.Email},
			Subject: "Report ready",
			Text:    text,
			ID:      t.ID + "-report", // the same Message-ID if the task runs again
		})
		if err != nil {
			return "", err // retried, unless the server refused it for good
		}
		t.Progress.Log("report sent to " + in.Email)
		return text, nil
	})
	registry.MustRegister("report", report)
}
