// Package flagdoc holds a command's flags and environment variables to the
// table of them in the README, for the tests of the example server and
// worker: every flag the command defines has a row, with the environment
// variable its help names and the default it prints; every flag and
// variable a row names is one the command reads; and every variable the
// command reads is named somewhere in the README.
package flagdoc

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Parse is a command's configuration parser: it reads the flags in args,
// their defaults and the rest of its configuration from the environment
// through getenv, and writes its usage to output. Given -h it returns an
// error wrapping flag.ErrHelp.
type Parse func(args []string, getenv func(string) string, output io.Writer) error

// row is one line of a README table: the flags of its first column, the
// environment variables of its second, and its default.
type row struct {
	flags, env []string
	def        string
	text       string
}

var (
	// usageFlag is a flag's first line in flag.PrintDefaults's output.
	usageFlag = regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)`)
	// usageEnv names the environment variable a flag's help gives as its
	// default, as in "(env FLOWS_QUEUE)".
	usageEnv = regexp.MustCompile(`\(env ([A-Z][A-Z0-9_]*)`)
	// usageDefault is the default flag.PrintDefaults prints.
	usageDefault = regexp.MustCompile(`\(default "?([^")]*)"?\)`)
	// code is a code span of a table cell.
	code = regexp.MustCompile("`([^`]+)`")
	// envName is an environment variable's name.
	envName = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`)
)

// Check reads the README at readmePath, finds the table that follows the
// line heading (a whole line, such as "### The demo server"), and checks
// it against the flags of parse and the environment it reads. redisURL is
// what getenv answers for REDIS_URL while the environment is recorded, for
// a command that reads the rest of it only when it has one.
func Check(t *testing.T, readmePath, heading string, parse Parse, redisURL string) {
	t.Helper()
	readme, err := os.ReadFile(readmePath)
	require.NoError(t, err)
	rows := table(t, string(readme), heading)

	var usage bytes.Buffer
	err = parse([]string{"-h"}, func(string) string { return "" }, &usage)
	require.True(t, errors.Is(err, flag.ErrHelp), "-h: %v", err)
	read := map[string]bool{}
	require.NoError(t, parse(nil, func(name string) string {
		read[name] = true
		if name == "REDIS_URL" {
			return redisURL
		}
		return ""
	}, io.Discard), "the command's configuration with no flags")

	defined := map[string]bool{}
	text := usage.String()
	locs := usageFlag.FindAllStringSubmatchIndex(text, -1)
	for i, loc := range locs {
		name := text[loc[2]:loc[3]]
		end := len(text)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		help := text[loc[1]:end]
		defined[name] = true
		r, ok := rowOf(rows, "-"+name)
		if !assert.True(t, ok, "flag -%s has no row in the README's table under %q", name, heading) {
			continue
		}
		if m := usageEnv.FindStringSubmatch(help); m != nil {
			assert.Contains(t, r.env, m[1], "the README's row of -%s names its environment variable: %s", name, r.text)
		}
		if m := usageDefault.FindStringSubmatch(help); m != nil {
			assert.True(t, sameDefault(m[1], r, "-"+name), "the README's row of -%s gives its default, %q: %s", name, m[1], r.text)
		}
	}
	for _, r := range rows {
		for _, f := range r.flags {
			assert.True(t, defined[strings.TrimPrefix(f, "-")], "the README's table under %q names %s, which the command does not define", heading, f)
		}
		for _, e := range r.env {
			assert.True(t, read[e], "the README's table under %q names %s, which the command does not read", heading, e)
		}
	}
	for name := range read {
		assert.Contains(t, string(readme), "`"+name+"`", "the command reads %s, which the README does not name", name)
	}
}

// table returns the rows of the first table after the line heading.
func table(t *testing.T, readme, heading string) []row {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "\n"+heading+"\n")
	require.True(t, ok, "the README has the line %q", heading)
	var rows []row
	inTable := false
	for line := range strings.SplitSeq(rest, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		if !inTable { // the header
			inTable = true
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 || strings.HasPrefix(cells[1], "---") {
			continue
		}
		r := row{def: strings.TrimSpace(cells[3]), text: line}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			r.flags = append(r.flags, m[1])
		}
		for _, m := range code.FindAllStringSubmatch(cells[2], -1) {
			if envName.MatchString(m[1]) {
				r.env = append(r.env, m[1])
			}
		}
		rows = append(rows, r)
	}
	require.NotEmpty(t, rows, "the table under %q has rows", heading)
	return rows
}

// rowOf returns the row that names flag.
func rowOf(rows []row, flag string) (row, bool) {
	for _, r := range rows {
		for _, f := range r.flags {
			if f == flag {
				return r, true
			}
		}
	}
	return row{}, false
}

// sameDefault reports whether the default cell of r says def for flag: the
// same text, or the same duration written with spaces ("10 s"). A row of
// several flags gives their defaults in order, separated by commas.
func sameDefault(def string, r row, flag string) bool {
	cell := r.def
	if len(r.flags) > 1 {
		parts := strings.Split(cell, ",")
		for i, f := range r.flags {
			if f == flag && i < len(parts) {
				cell = parts[i]
			}
		}
	}
	cell = strings.ReplaceAll(strings.Trim(strings.TrimSpace(cell), "`"), " ", "")
	if cell == def {
		return true
	}
	d, err := time.ParseDuration(def)
	if err != nil {
		return false
	}
	c, err := time.ParseDuration(cell)
	return err == nil && c == d
}
