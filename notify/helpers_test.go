package notify_test

import (
	"errors"
	"log/slog"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func errorsIs(err, target error) bool { return errors.Is(err, target) }
