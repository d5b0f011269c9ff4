package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flowsrun/flows/internal/syncbuf"
)

// Environment variables of the browser tests.
const (
	// chromiumEnv names a Chrome or Chromium binary to use instead of the
	// first one found on PATH.
	chromiumEnv = "FLOWS_CHROMIUM"
	// artifactsEnv names the directory the browser tests save their
	// screenshots in. Empty means a temporary directory of the test.
	artifactsEnv = "FLOWS_ARTIFACTS"
)

// chromiumInstallHint tells what to do when no browser can be started.
const chromiumInstallHint = "the browser tests need Chromium: install it with " +
	"`apt-get install chromium` (Debian; .ci/run does it), or set " + chromiumEnv +
	" to a Chrome or Chromium binary"

// findChromium returns the browser binary: $FLOWS_CHROMIUM, else the first
// of the usual names found on PATH.
func findChromium() (string, error) {
	if p := os.Getenv(chromiumEnv); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("%s=%s: %w", chromiumEnv, p, err)
		}
		return path, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", errors.New("no chromium, chromium-browser or google-chrome on PATH")
}

// startChromium starts a headless Chromium with a fresh profile for the
// test and returns the browser's chromedp context; each
// chromedp.NewContext(browser) is a new tab. The test fails, never skips,
// when no browser can be started. At cleanup the browser is stopped and
// the test checks that none of its processes is left.
func startChromium(t *testing.T) context.Context {
	t.Helper()
	path, err := findChromium()
	if err != nil {
		t.Fatalf("%v: %s", err, chromiumInstallHint)
	}
	profile := t.TempDir()
	output := &syncbuf.Buffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(output),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		// A graceful close first, then the allocator kills what is left
		// and waits for the browser process to exit.
		closeCtx, cancel := context.WithTimeout(browser, 10*time.Second)
		_ = chromedp.Cancel(closeCtx)
		cancel()
		cancelBrowser()
		cancelAlloc()
		checkNoProcessUses(t, profile)
	})
	// The first Do starts the browser; it lives as long as browser.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("cannot start %s: %v\nbrowser output:\n%s\n%s", path, err, tail(output.String(), 40), chromiumInstallHint)
	}
	return browser
}

// checkNoProcessUses fails the test if a process that runs with the
// browser profile dir is still there a while after the browser stopped,
// and kills it (by its pid) so that the test run leaks nothing. Chromium
// passes --user-data-dir to all its helper processes.
func checkNoProcessUses(t *testing.T, profile string) {
	t.Helper()
	var left []int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left = processesWithArg("--user-data-dir=" + profile)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, pid := range left {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
	if len(left) > 0 {
		t.Errorf("browser processes left after the test: %v (killed)", left)
	}
}

// processesWithArg returns the pids of the processes that have arg on
// their command line. It finds nothing where there is no /proc.
func processesWithArg(arg string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for a := range bytes.SplitSeq(cmdline, []byte{0}) {
			if string(a) == arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// artifactsDir returns the directory for the screenshots of the browser
// tests: $FLOWS_ARTIFACTS when set, else a temporary directory.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(artifactsEnv)
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%s: %v", artifactsEnv, err)
	}
	return dir
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
