package flows_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quickStartProgram returns the Go program of the README's "Quick start"
// section: its first ```go block.
func quickStartProgram(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Quick start\n")
	require.True(t, ok, "the README has a Quick start section")
	section, _, _ = strings.Cut(section, "\n## ")
	_, program, ok := strings.Cut(section, "\n```go\n")
	require.True(t, ok, "the Quick start has a Go program")
	program, _, ok = strings.Cut(program, "\n```\n")
	require.True(t, ok, "the Go program ends")
	return program + "\n"
}

// TestQuickStartRuns builds the README's quick start program as a
// newcomer would, in a module of their own that requires this one, runs
// it, and starts and follows a task over its API as the README's curl
// commands do. Example in example_test.go runs the same steps in-process;
// this test checks the text a reader copies.
func TestQuickStartRuns(t *testing.T) {
	t.Parallel()
	goCmd, err := exec.LookPath("go")
	require.NoError(t, err, "the go command is on PATH")
	root, err := filepath.Abs(".")
	require.NoError(t, err)

	program := quickStartProgram(t)
	require.Equal(t, 1, strings.Count(program, `":8080"`), "the program listens on :8080:\n%s", program)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	program = strings.Replace(program, `":8080"`, strconv.Quote(addr), 1)

	// The reader's module: `go get github.com/flowsrun/flows` and `go mod
	// tidy`, with this checkout in place of the published module, and
	// nothing fetched: the checkout's go.sum stands in for what tidy
	// records, so this test cannot tell whether the README says to tidy.
	dir := t.TempDir()
	gomod := "module example.com/quickstart\n\ngo " + goDirective(t, "go.mod") + "\n\n" +
		"require github.com/flowsrun/flows v0.0.0\n\nreplace github.com/flowsrun/flows => " + strconv.Quote(root) + "\n"
	sum, err := os.ReadFile("go.sum")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(program), 0o644))
	bin := filepath.Join(dir, "quickstart")
	build := exec.Command(goCmd, "build", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build of the README's quick start:\n%s\n%s", out, program)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, bin)
	var logs strings.Builder
	run.Stdout, run.Stderr = &logs, &logs
	require.NoError(t, run.Start())
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		_ = run.Process.Kill()
		<-exited
	})

	base := "http://" + addr + "/api"
	client := &http.Client{Timeout: 10 * time.Second}
	for {
		resp, err := client.Get(base + "/flows/")
		if err == nil {
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the quick start exited before it served: %v\n%s", err, logs.String())
		case <-ctx.Done():
			t.Fatalf("the quick start did not serve on %s: %v", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}

	resp, err := client.Post(base+"/start-task/", "application/json", strings.NewReader(`{"flow": "greet", "inputs": {"name": "Ada"}}`))
	require.NoError(t, err)
	var started struct {
		TaskID string `json:"task_id"`
		Error  string `json:"error"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&started))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "start-task: %s", started.Error)
	require.NotEmpty(t, started.TaskID)

	// The stream ends after the terminal snapshot.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/task-status/"+started.TaskID+"/", nil)
	require.NoError(t, err)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var last struct {
		State   string `json:"state"`
		Details struct {
			Status      string `json:"status"`
			FinalResult string `json:"final_result"`
			StepResults []struct {
				Message string `json:"message"`
			} `json:"step_results"`
		} `json:"details"`
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			require.NoError(t, json.Unmarshal([]byte(data), &last))
		}
	}
	require.NoError(t, sc.Err())
	assert.Equal(t, "SUCCESS", last.State)
	assert.Equal(t, "Hello, Ada!", last.Details.FinalResult)
	if assert.Len(t, last.Details.StepResults, 1) {
		assert.Equal(t, "greeting Ada", last.Details.StepResults[0].Message)
	}
}
