package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Time limits of the browser tests. They only keep a broken test from
// hanging: every wait ends as soon as its condition holds, so they can be
// generous for a loaded machine.
const (
	waitTimeout   = 30 * time.Second
	actionTimeout = 30 * time.Second
	pollInterval  = 25 * time.Millisecond
)

// pageProbeJS runs in every document of the test tabs before the page's
// own script. It records what goes wrong in the page (uncaught errors,
// rejected promises, Content-Security-Policy violations) in __problems,
// records in __liveLengths the successive lengths of each card's live
// text (to see tokens arrive one by one), and defines __card(id), which
// reads a task card the way a person sees it.
const pageProbeJS = `(() => {
  window.__problems = [];
  addEventListener('error', (e) => __problems.push('error: ' + e.message + ' at ' + e.filename + ':' + e.lineno));
  addEventListener('unhandledrejection', (e) => __problems.push('unhandled rejection: ' + ((e.reason && e.reason.stack) || e.reason)));
  document.addEventListener('securitypolicyviolation', (e) => __problems.push('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));

  window.__liveLengths = {};
  document.addEventListener('DOMContentLoaded', () => {
    const tasks = document.getElementById('tasks');
    if (!tasks) return;
    new MutationObserver(() => {
      for (const li of tasks.children) {
        const live = li.querySelector('.live-text');
        const n = live ? live.textContent.length : 0;
        const seen = (__liveLengths[li.dataset.taskId] ||= []);
        if (seen[seen.length - 1] !== n) seen.push(n);
      }
    }).observe(tasks, { subtree: true, childList: true, characterData: true });
  });

  const shown = (n) => Boolean(n) && n.checkVisibility();
  window.__card = (id) => {
    const li = [...document.querySelectorAll('#tasks > li')].find((x) => x.dataset.taskId === id);
    if (!li) return null;
    const q = (s) => li.querySelector(s);
    return {
      state: li.dataset.state,
      connection: li.dataset.connection || '',
      reconnects: Number(li.dataset.reconnects || 0),
      badge: q('.badge').textContent,
      status: q('.task-status').textContent,
      progress: Number(q('.task-progress').value),
      steps: [...li.querySelectorAll('.step-list > li')].map((s) =>
        s.classList.contains('step-tool') ? 'tool: ' + s.querySelector('summary').textContent : s.textContent),
      tools: [...li.querySelectorAll('.step-tool')].map((s) => ({
        summary: s.querySelector('summary').textContent,
        data: s.querySelector('.tool-data').textContent,
        open: s.querySelector('details').open,
        dataShown: shown(s.querySelector('.tool-data')),
      })),
      result: shown(q('.result-text')) ? q('.result-text').textContent : null,
      live: q('.live-text').textContent,
      liveShown: shown(q('.live-text')),
      connectionText: shown(q('.task-connection')) ? q('.task-connection').textContent : '',
      cancelShown: shown(q('.cancel')),
      removeShown: shown(q('.remove')),
      labels: [...li.querySelectorAll('.task-labels .label')].map((l) => l.textContent),
      notifyShown: shown(q('.task-notify')),
      notifications: [...li.querySelectorAll('.notify-item')].map((n) => ({
        channel: n.dataset.channel, delivery: n.dataset.delivery, text: n.textContent })),
    };
  };
})();`

// cardView is a task card as __card reads it.
type cardView struct {
	State          string       `json:"state"`
	Connection     string       `json:"connection"`
	Reconnects     int          `json:"reconnects"`
	Badge          string       `json:"badge"`
	Status         string       `json:"status"`
	Progress       float64      `json:"progress"`
	Steps          []string     `json:"steps"`
	Tools          []toolView   `json:"tools"`
	Result         *string      `json:"result"`
	Live           string       `json:"live"`
	LiveShown      bool         `json:"liveShown"`
	ConnectionText string       `json:"connectionText"`
	CancelShown    bool         `json:"cancelShown"`
	RemoveShown    bool         `json:"removeShown"`
	Labels         []string     `json:"labels"`
	NotifyShown    bool         `json:"notifyShown"`
	Notifications  []notifyView `json:"notifications"`
}

// notifyView is a notification line of a card.
type notifyView struct {
	Channel  string `json:"channel"`
	Delivery string `json:"delivery"`
	Text     string `json:"text"`
}

// toolView is a tool_result block of a card.
type toolView struct {
	Summary   string `json:"summary"`
	Data      string `json:"data"`
	Open      bool   `json:"open"`
	DataShown bool   `json:"dataShown"`
}

// pageTab is a browser tab on the demo page.
type pageTab struct {
	t         *testing.T
	ctx       context.Context
	url       string
	artifacts string
}

// openPage opens a new tab of browser on the demo page at url and waits
// until the page lists the flows. The tab closes when the test ends, after
// a check that nothing went wrong in the page.
func openPage(t *testing.T, browser context.Context, url, artifacts string) *pageTab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	// The first call opens the tab, which lives as long as ctx: no
	// timeout on it.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: pageProbeJS}); err != nil {
		t.Fatalf("open a browser tab: %v", err)
	}
	p := &pageTab{t: t, ctx: ctx, url: url, artifacts: artifacts}
	t.Cleanup(p.checkNoProblems)
	p.do("open the page", chromedp.Navigate(url+"/"))
	p.waitFor("the flow list", `!document.getElementById('flow-select').disabled`)
	return p
}

// do runs the actions in the tab, failing the test on error.
func (p *pageTab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, actionTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.fail("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page into a T.
func eval[T any](p *pageTab, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, actionTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.fail("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the JavaScript expression is truthy in the page.
// The expression is evaluated by the browser's debugger, so the page's
// Content-Security-Policy does not apply to it; an expression that throws
// (during a reload, say) counts as false.
func (p *pageTab) waitFor(what, expr string) {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(p.ctx, actionTimeout)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("Boolean("+expr+")"))
		cancel()
		switch {
		case err == nil && ok:
			return
		case err != nil:
			lastErr = err
		}
		if time.Now().After(deadline) {
			p.fail("waited %s for %s (%s); last error: %v", waitTimeout, what, expr, lastErr)
		}
		time.Sleep(pollInterval)
	}
}

// waitCard waits until the card of task id satisfies cond, a JavaScript
// expression about c, the card as __card returns it, and returns the card.
func (p *pageTab) waitCard(id, what, cond string) cardView {
	p.t.Helper()
	p.waitFor(what, fmt.Sprintf(`((c) => c && (%s))(__card(%s))`, cond, jsString(id)))
	return p.card(id)
}

// card reads the card of task id; the test fails if there is none.
func (p *pageTab) card(id string) cardView {
	p.t.Helper()
	c := eval[*cardView](p, "__card("+jsString(id)+")")
	if c == nil {
		p.fail("no card for task %s", id)
	}
	return *c
}

// taskIDs returns the ids of the cards, top to bottom.
func (p *pageTab) taskIDs() []string {
	p.t.Helper()
	return eval[[]string](p, `[...document.querySelectorAll('#tasks > li')].map((li) => li.dataset.taskId)`)
}

// chooseFlow selects a flow in the flow selector, as a person picking it
// from the list does.
func (p *pageTab) chooseFlow(name string) {
	p.t.Helper()
	ok := eval[bool](p, fmt.Sprintf(`(() => {
		const s = document.getElementById('flow-select');
		if (![...s.options].some((o) => o.value === %[1]s)) return false;
		s.value = %[1]s;
		s.dispatchEvent(new Event('change', { bubbles: true }));
		return true;
	})()`, jsString(name)))
	if !ok {
		p.fail("the flow selector has no %s", name)
	}
}

// startFlow chooses the flow, types the inputs and clicks Start, then
// waits for the new task's card and returns the task id.
func (p *pageTab) startFlow(flowName string, inputs map[string]string) string {
	p.t.Helper()
	before := p.taskIDs()
	p.chooseFlow(flowName)
	for name, value := range inputs {
		p.do("type "+name, chromedp.SendKeys(chromedp.CSS("#input-"+name), value))
	}
	p.do("click Start", chromedp.Click(chromedp.CSS("#start-button")))
	return p.waitNewTask(before)
}

// waitNewTask waits for a card whose task is not in before, and returns
// its id.
func (p *pageTab) waitNewTask(before []string) string {
	p.t.Helper()
	known, _ := json.Marshal(before)
	p.waitFor("a new task card", fmt.Sprintf(`(() => {
		const first = document.querySelector('#tasks > li');
		return first && !%s.includes(first.dataset.taskId);
	})()`, known))
	return p.taskIDs()[0]
}

// clickInCard clicks the element of the card of task id that the CSS
// selector sel finds.
func (p *pageTab) clickInCard(id, sel string) {
	p.t.Helper()
	p.do("click "+sel, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#tasks > li[data-task-id=%s] %s`, jsString(id), sel))))
}

// reload reloads the page and waits until it lists the flows again.
func (p *pageTab) reload() {
	p.t.Helper()
	p.do("reload", chromedp.Reload())
	p.waitFor("the flow list after the reload", `!document.getElementById('flow-select').disabled`)
}

// setViewport sets the size of the page's viewport in CSS pixels, and the
// colour scheme it prefers ("light" or "dark").
func (p *pageTab) setViewport(width, height int64, scheme string) {
	p.t.Helper()
	p.do("set the viewport",
		chromedp.EmulateViewport(width, height),
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
			})
			return err
		}),
	)
}

// screenshot saves a PNG of the whole page as name.png in the artifacts
// directory and returns its path.
func (p *pageTab) screenshot(name string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, actionTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(p.artifacts, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatalf("save screenshot: %v", err)
	}
	p.t.Logf("screenshot: %s", path)
	return path
}

// fail ends the test with the message, the page's visible text and a
// screenshot of the page, to see what the test saw.
func (p *pageTab) fail(format string, args ...any) {
	p.t.Helper()
	msg := fmt.Sprintf(format, args...)
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ''`))
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		name := "failed-" + strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name()) + ".png"
		if os.WriteFile(filepath.Join(p.artifacts, name), png, 0o644) == nil {
			msg += "\nscreenshot: " + filepath.Join(p.artifacts, name)
		}
	}
	p.t.Fatalf("%s\npage text:\n%s", msg, tail(text, 60))
}

// checkNoProblems fails the test if the page recorded an error.
func (p *pageTab) checkNoProblems() {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	problems, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.__problems || []`))
	if err != nil {
		p.t.Errorf("read the page's problems: %v", err)
		return
	}
	for _, pr := range problems {
		p.t.Errorf("page problem: %s", pr)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
