package ssehttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/leakcheck"
	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
)

// startAndWatch starts a poem through the API and follows its stream to
// the end, as one browser tab would. It returns the last snapshot.
func startAndWatch(ctx context.Context, client *http.Client, base string) (progress.Snapshot, error) {
	var last progress.Snapshot
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/start-task/", strings.NewReader(`{"flow":"poem_flow","inputs":{}}`))
	if err != nil {
		return last, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return last, err
	}
	var started struct {
		TaskID string `json:"task_id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return last, fmt.Errorf("start-task: status %d, %v", resp.StatusCode, err)
	}

	req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+"/task-status/"+started.TaskID+"/", nil)
	if err != nil {
		return last, err
	}
	resp, err = client.Do(req)
	if err != nil {
		return last, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return last, fmt.Errorf("task-status: status %d", resp.StatusCode)
	}
	stream := sse.NewReader(resp.Body)
	for {
		f, err := stream.Next()
		if errors.Is(err, io.EOF) {
			return last, nil
		}
		if err != nil {
			return last, err
		}
		if f.HasData && f.Event == "" {
			last = progress.Snapshot{}
			if err := json.Unmarshal([]byte(f.Data), &last); err != nil {
				return last, err
			}
		}
	}
}

// TestManyTasksAndWatchers runs 200 tasks watched by 200 concurrent
// streams; all reach SUCCESS, and once the server and the worker are shut
// down no goroutine is left behind.
func TestManyTasksAndWatchers(t *testing.T) {
	baseline := runtime.NumGoroutine()
	e := newEnv(t, envOptions{stepDelay: time.Millisecond, concurrency: 32})
	e.client.Transport.(*http.Transport).MaxIdleConnsPerHost = 256

	const n = 200
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	finals := make([]progress.Snapshot, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { finals[i], errs[i] = startAndWatch(ctx, e.client, e.server.URL) })
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i], "task %d", i)
		assert.Equal(t, progress.StateSuccess, finals[i].State, "task %d", i)
		assert.Equal(t, 100, finals[i].Details.Progress, "task %d", i)
	}

	e.stop()
	leakcheck.Settle(t, baseline, 10*time.Second)
}

// TestDisconnectFreesEverything closes a watch in the middle of a task:
// the handler and the store's subscription end at once, while the task
// goes on.
func TestDisconnectFreesEverything(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "gated_flow")
	e.waitStarted(t, id)
	baseline := runtime.NumGoroutine()

	for range 5 {
		w := e.open(t, id, "", "")
		_, ok := w.nextMessage(t)
		require.True(t, ok)
		w.close()
	}
	e.client.CloseIdleConnections()
	leakcheck.Settle(t, baseline, 10*time.Second)

	e.release(t, 5)
	assert.Equal(t, progress.StateSuccess, e.waitTerminal(t, id).State)
}
