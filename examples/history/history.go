// Package history wires the run history in PostgreSQL (pghistory) into
// the example server and worker when DATABASE_URL is set.
package history

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/flowsrun/flows/pghistory"
	"github.com/flowsrun/flows/queue"
)

// Hooks opens the history at url and returns the finish hooks that write
// it (for queue.WorkerConfig.OnFinish) and the func that closes it. An
// empty url means no history: no hooks, nothing to close. It fails if the
// database cannot be reached, so that a misconfigured process stops at
// start-up.
func Hooks(ctx context.Context, url string, logger *slog.Logger) ([]queue.FinishHook, func(), error) {
	if url == "" {
		return nil, func() {}, nil
	}
	h, err := pghistory.Open(ctx, url, pghistory.Config{Logger: logger})
	if err != nil {
		return nil, nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	logger.Info("run history: every finished task is written to PostgreSQL (DATABASE_URL)")
	return []queue.FinishHook{h.Hook}, h.Close, nil
}
