package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// childEnv, when set, makes the process the SSE clients of the sse
// scenario rather than the benchmark: the browsers live in a process of
// their own, so that the server's memory is the server's alone.
const childEnv = "FLOWBENCH_SSE_CLIENTS"

// childJob is what the benchmark tells its client process, on its
// standard input.
type childJob struct {
	Base    string        `json:"base"`
	Prefix  string        `json:"prefix"`
	Count   int           `json:"count"`
	Events  int           `json:"events"`
	Timeout time.Duration `json:"timeout"`
}

func (j childJob) id(i int) string { return j.Prefix + strconv.Itoa(i) }

// sseRun is what one sse run measured.
type sseRun struct {
	ok          int     // streams that received every event in order
	kib, peak   float64 // server RSS per stream: settled, and at the peak while events flow
	connsBefore int     // Redis connections of the server with no stream open
	connsAfter  int     // ... and with every stream open
	firstErr    string
	heap, stack float64 // Go heap and goroutine stacks per stream, KiB, settled
	allocs      float64 // allocations per stream while connecting
	goroutines  float64 // per stream, settled
}

func benchSSE(ctx context.Context, e *env, p *printer) error {
	cfg := e.cfg
	var runs []sseRun
	for i := range cfg.Runs {
		r, err := sseOnce(ctx, e)
		if err != nil {
			return err
		}
		p.note("sse run %d: %d/%d streams complete, %.1f KiB/stream settled (heap %.1f, stacks %.1f, %.1f goroutines), %.1f KiB/stream peak, redis conns %d -> %d, %.0f allocations/stream to connect",
			i+1, r.ok, cfg.Clients, r.kib, r.heap, r.stack, r.goroutines, r.peak, r.connsBefore, r.connsAfter, r.allocs)
		runs = append(runs, r)
	}
	par := params("clients", cfg.Clients, "events", cfg.Events, "backend", cfg.Backend)
	p.figure("sse", "streams complete", collect(runs, func(r sseRun) float64 { return float64(r.ok) }), par)
	p.figure("sse", "KiB/stream settled", collect(runs, func(r sseRun) float64 { return r.kib }), par)
	p.figure("sse", "KiB/stream peak", collect(runs, func(r sseRun) float64 { return r.peak }), par)
	if e.redis() {
		p.figure("sse", "redis conns 0 streams", collect(runs, func(r sseRun) float64 { return float64(r.connsBefore) }), par)
		p.figure("sse", "redis conns N streams", collect(runs, func(r sseRun) float64 { return float64(r.connsAfter) }), par)
	}
	for _, r := range runs {
		if r.ok != cfg.Clients {
			return fmt.Errorf("%d of %d streams did not receive every event in order; first error: %s", cfg.Clients-r.ok, cfg.Clients, r.firstErr)
		}
	}
	return nil
}

func sseOnce(ctx context.Context, e *env) (sseRun, error) {
	cfg := e.cfg
	st, err := e.newStack(ctx)
	if err != nil {
		return sseRun{}, err
	}
	defer st.close()
	reg := registry.New()
	reg.MustRegister("warm", noopFlow(1))
	broker := queue.NewBroker(st.queue, st.store, queue.BrokerConfig{Registry: reg})
	srv, err := serve(ssehttp.New(ssehttp.Config{Queue: broker, Progress: st.store, Registry: reg, Logger: discard}))
	if err != nil {
		return sseRun{}, err
	}
	defer srv.close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute+time.Duration(cfg.Clients*(cfg.Events+1))*time.Millisecond)
	defer cancel()

	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	job := childJob{Base: srv.url, Prefix: "sse" + hex.EncodeToString(rnd[:]) + "-", Count: cfg.Clients, Events: cfg.Events}
	if dl, ok := ctx.Deadline(); ok {
		job.Timeout = time.Until(dl)
	}
	// Every task is created and running before any stream opens.
	err = forEach(cfg.Producers, cfg.Clients, func(i int) error {
		if err := st.store.Create(ctx, job.id(i)); err != nil {
			return err
		}
		return progress.NewTaskReporter(st.store, job.id(i), discard).Start(ctx, "Running")
	})
	if err != nil {
		return sseRun{}, fmt.Errorf("create tasks: %w", err)
	}
	// One stream first, so that the pub/sub connection is open and the
	// server warm when the baseline is taken.
	stop := startWorker(st.queue, st.store, nil, reg, 1, providers{})
	warmClient := &http.Client{Transport: &http.Transport{}}
	err = warmUpStream(ctx, broker, warmClient, srv.url)
	warmClient.CloseIdleConnections()
	stop()
	if err != nil {
		return sseRun{}, err
	}

	var r sseRun
	var mem0, mem1 runtime.MemStats
	rss0 := settledRSS()
	runtime.ReadMemStats(&mem0)
	g0 := runtime.NumGoroutine()
	if e.redis() {
		if r.connsBefore, err = e.connections(ctx); err != nil {
			return sseRun{}, err
		}
	}

	child, err := startChild(ctx, job)
	if err != nil {
		return sseRun{}, err
	}
	defer child.close()
	line, err := child.line(ctx)
	if err != nil {
		return sseRun{}, err
	}
	if !strings.HasPrefix(line, "ready ") {
		return sseRun{}, fmt.Errorf("client process: %s", line)
	}
	rss1 := settledRSS()
	runtime.ReadMemStats(&mem1)
	r.goroutines = float64(runtime.NumGoroutine()-g0) / float64(cfg.Clients)
	if cfg.MemProfile != "" {
		if err := writeHeapProfile(cfg.MemProfile); err != nil {
			return sseRun{}, err
		}
	}
	if e.redis() {
		if r.connsAfter, err = e.connections(ctx); err != nil {
			return sseRun{}, err
		}
	}

	// Events flow: each producer owns some tasks and appends their events
	// in order, then ends them.
	peak := newPeakRSS()
	err = forEach(cfg.Producers, cfg.Producers, func(g int) error {
		for k := 1; k <= cfg.Events; k++ {
			for i := g; i < cfg.Clients; i += cfg.Producers {
				ev := progress.Event{Type: progress.EventProgress, Progress: k * 100 / (cfg.Events + 1), Status: "e" + strconv.Itoa(k)}
				if _, err := st.store.Append(ctx, job.id(i), ev); err != nil {
					return err
				}
			}
		}
		for i := g; i < cfg.Clients; i += cfg.Producers {
			if err := progress.NewTaskReporter(st.store, job.id(i), discard).Succeed(ctx, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		peak.stop()
		return sseRun{}, fmt.Errorf("append events: %w", err)
	}
	line, err = child.line(ctx)
	rssPeak := peak.stop()
	if err != nil {
		return sseRun{}, err
	}
	var bad int
	if _, err := fmt.Sscanf(line, "done %d %d", &r.ok, &bad); err != nil {
		return sseRun{}, fmt.Errorf("client process: %q", line)
	}
	if _, msg, ok := strings.Cut(line, " error: "); ok {
		r.firstErr = msg
	}
	n := float64(cfg.Clients)
	r.kib = float64(rss1-rss0) / 1024 / n
	r.heap = float64(int64(mem1.HeapInuse)-int64(mem0.HeapInuse)) / 1024 / n
	r.stack = float64(int64(mem1.StackInuse)-int64(mem0.StackInuse)) / 1024 / n
	r.allocs = float64(mem1.Mallocs-mem0.Mallocs) / n
	r.peak = float64(max(rssPeak, rss1)-rss0) / 1024 / n
	return r, nil
}

// forEach calls fn(0..n-1) from workers goroutines and returns the first
// error.
func forEach(workers, n int, fn func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// rss returns the resident set size of this process in bytes, from
// /proc/self/status (0 where there is none).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// settledRSS collects garbage and returns memory to the system before
// reading the RSS, so that it counts what is live. A few collections run
// first, as they would in a server that has run for a while: each one
// also halves the stacks of goroutines that use less than a quarter of
// theirs, which one collection alone leaves large.
func settledRSS() int64 {
	for range 3 {
		runtime.GC()
	}
	debug.FreeOSMemory()
	return rss()
}

// peakRSS samples the RSS until stop, which returns the highest value.
type peakRSS struct {
	quit chan struct{}
	done chan int64
}

func newPeakRSS() *peakRSS {
	p := &peakRSS{quit: make(chan struct{}), done: make(chan int64)}
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var top int64
		for {
			top = max(top, rss())
			select {
			case <-p.quit:
				p.done <- max(top, rss())
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *peakRSS) stop() int64 {
	close(p.quit)
	return <-p.done
}

// childProc is the client process of an sse run.
type childProc struct {
	cmd   *exec.Cmd
	lines chan string
	wait  chan error
}

func startChild(ctx context.Context, job childJob) (*childProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	in, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start client process: %w", err)
	}
	c := &childProc{cmd: cmd, lines: make(chan string, 4), wait: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		err := cmd.Wait()
		if err != nil && stderr.Len() > 0 {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		c.wait <- err
		close(c.lines)
	}()
	return c, nil
}

// line returns the next line the client process prints.
func (c *childProc) line(ctx context.Context) (string, error) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", fmt.Errorf("client process ended: %v", <-c.wait)
		}
		return l, nil
	case <-ctx.Done():
		return "", fmt.Errorf("client process: %w", errTimeout)
	}
}

func (c *childProc) close() {
	if c.cmd.Process != nil {
		_ = c.cmd.Process.Kill()
	}
	for range c.lines {
	}
}

// childMain is the client process: it opens job.Count streams, says
// "ready <open> <failed>" once each has its first message, then checks
// that each receives "Running", e1..eN and the SUCCESS snapshot in that
// order, and says "done <ok> <bad>" (with " error: <first error>").
func childMain(stdin io.Reader, stdout io.Writer) int {
	var job childJob
	if err := json.NewDecoder(stdin).Decode(&job); err != nil {
		fmt.Fprintln(os.Stderr, "flowbench clients:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(job.Timeout, time.Minute))
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}}

	var (
		connecting sync.WaitGroup
		finished   sync.WaitGroup
		open, ok   atomic.Int64
		firstErr   atomic.Value
	)
	fail := func(i int, err error) { firstErr.CompareAndSwap(nil, fmt.Sprintf("stream %d: %v", i, err)) }
	dials := make(chan struct{}, 256) // opening streams at once
	for i := range job.Count {
		connecting.Add(1)
		finished.Add(1)
		go func() {
			defer finished.Done()
			dials <- struct{}{}
			sse, body, err := watch(ctx, client, job.Base, job.id(i))
			var first wireSnapshot
			if err == nil {
				first, err = nextSnapshot(sse)
			}
			<-dials
			connecting.Done()
			if err != nil {
				fail(i, err)
				return
			}
			defer body.Close()
			open.Add(1)
			if err := followStream(sse, first, job.Events); err != nil {
				fail(i, err)
				return
			}
			ok.Add(1)
		}()
	}
	connecting.Wait()
	fmt.Fprintf(stdout, "ready %d %d\n", open.Load(), int64(job.Count)-open.Load())
	finished.Wait()
	line := fmt.Sprintf("done %d %d", ok.Load(), int64(job.Count)-ok.Load())
	if msg, isSet := firstErr.Load().(string); isSet {
		line += " error: " + msg
	}
	fmt.Fprintln(stdout, line)
	return 0
}

func nextSnapshot(sse *sseReader) (wireSnapshot, error) {
	m, err := sse.next()
	if err != nil {
		return wireSnapshot{}, err
	}
	return m.snapshot()
}

// followStream checks that a stream whose first snapshot is first goes on
// with e1..eN and then SUCCESS, and ends.
func followStream(sse *sseReader, first wireSnapshot, events int) error {
	if first.Details.Status != "Running" {
		return fmt.Errorf("first snapshot has status %q, want Running", first.Details.Status)
	}
	for k := 1; k <= events; k++ {
		s, err := nextSnapshot(sse)
		if err != nil {
			return fmt.Errorf("before event %d: %w", k, err)
		}
		if want := "e" + strconv.Itoa(k); s.Details.Status != want || s.State != string(progress.StateProgress) {
			return fmt.Errorf("got %s %q, want PROGRESS %q", s.State, s.Details.Status, want)
		}
	}
	s, err := nextSnapshot(sse)
	if err != nil {
		return fmt.Errorf("before the terminal event: %w", err)
	}
	if s.State != string(progress.StateSuccess) {
		return fmt.Errorf("got %s %q, want SUCCESS", s.State, s.Details.Status)
	}
	if _, err := sse.next(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("stream goes on after the terminal event: %v", err)
	}
	return nil
}

// writeHeapProfile writes a heap profile of live objects to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
