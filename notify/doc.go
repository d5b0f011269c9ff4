// Package notify tells the outside world that a task has finished: an
// e-mail, a signed webhook, or any Channel a host writes.
//
// Notifications are themselves tasks. When a task reaches SUCCESS or
// FAILURE, a Notifier enqueues one notification task per channel, of the
// internal flow FlowName, carrying the task's final snapshot. So sending
// never slows the flow or the request that started it, and each
// notification gets what every task gets from the engine: at-least-once
// delivery across worker crashes, retries with backoff, and a place in the
// dead-letter set, with the last error as its reason, when its attempts
// are spent. The end of a notification task is never notified about.
// Notification tasks belong to queue.InternalOwner, not to the owner of
// the task they are about: over ssehttp, only operators may read, cancel
// or re-queue them.
//
// # Wiring
//
//	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg})
//	hook, err := notify.NewWebhook(notify.WebhookConfig{
//		URL:    "https://hooks.example.com/flows",
//		Secret: os.Getenv("WEBHOOK_SECRET"), // whsec_...
//	})
//	n, err := notify.New(notify.Config{Queue: broker, Channels: []notify.Channel{hook}})
//	err = n.Register(reg) // every worker's registry needs the delivery flow
//	worker := queue.NewWorker(backend, store, queue.WorkerConfig{
//		Registry: reg,
//		OnFinish: []queue.FinishHook{n.Hook()}, // enqueues the notifications
//	})
//
// # Webhooks
//
// A Webhook POSTs a JSON body (the task's id, flow, owner, state, times
// and final snapshot; see Webhook for its fields) signed per Standard
// Webhooks (https://www.standardwebhooks.com): the webhook-id header is the same on
// every retry of one notification, so a receiver can drop repeats. A 2xx
// answer is a delivery; 5xx, 408, 409, 429 (after a Retry-After),
// timeouts and connection errors are retried; other answers are not. The target is the
// host's configuration, never a client's: a URL whose host is or resolves
// to a loopback, private or link-local address is refused unless
// WebhookConfig.AllowPrivate is set, when the webhook is made and again
// each time it is dialled, so that DNS rebinding cannot get around it.
// Secrets and the URL's password and query never appear in logs or
// errors.
//
// A receiver checks each delivery with a Verifier, on the body exactly as
// received:
//
//	v, err := notify.NewVerifier(os.Getenv("WEBHOOK_SECRET"))
//	http.HandleFunc("/flows", func(w http.ResponseWriter, r *http.Request) {
//		body, err := v.VerifyRequest(r, 0)
//		if err != nil {
//			http.Error(w, "bad signature", http.StatusUnauthorized)
//			return
//		}
//		// process body once per r.Header.Get("webhook-id")
//	})
//
// # E-mail
//
// The SMTP channel lives in its own module,
// github.com/flowsrun/flows/notify/smtp, so that a program without e-mail
// does not pull in an SMTP client. Its subject and bodies come from
// Templates rendered with each Notification.
package notify
