package main

import (
	"io"
	"testing"

	"github.com/flowsrun/flows/examples/internal/flagdoc"
)

// TestReadmeFlagTable holds the README's table of the example worker's flags
// to parseConfig: a row for every flag, with its environment variable and
// default, and no flag or variable the worker does not read.
func TestReadmeFlagTable(t *testing.T) {
	t.Parallel()
	flagdoc.Check(t, "../../README.md", "### Options", func(args []string, getenv func(string) string, output io.Writer) error {
		_, err := parseConfig(args, getenv, output)
		return err
	}, "redis://127.0.0.1:6379/0")
}
