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

// History is the run history of an example process: nothing when
// DATABASE_URL is not set.
type History struct {
	// Store is the history, nil without DATABASE_URL.
	Store *pghistory.Store
}

// Open opens the history at url; an empty url means none. It fails if
// the database cannot be reached, so that a misconfigured process stops
// at start-up.
func Open(ctx context.Context, url string, logger *slog.Logger) (*History, error) {
	if url == "" {
		return &History{}, nil
	}
	s, err := pghistory.Open(ctx, url, pghistory.Config{Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	logger.Info("run history in PostgreSQL (DATABASE_URL)")
	return &History{Store: s}, nil
}

// Hooks returns the finish hooks that write the history, for
// queue.WorkerConfig.OnFinish: none without a history.
func (h *History) Hooks() []queue.FinishHook {
	if h.Store == nil {
		return nil
	}
	return []queue.FinishHook{h.Store.Hook}
}

// Lister returns the history for queue.InspectorConfig.History, so that
// listings go on past the backend's retention: nil without a history.
func (h *History) Lister() queue.History {
	if h.Store == nil {
		return nil
	}
	return h.Store
}

// Close closes the history's connections.
func (h *History) Close() {
	if h.Store != nil {
		h.Store.Close()
	}
}
