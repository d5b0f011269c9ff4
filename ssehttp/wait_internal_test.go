package ssehttp

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzWaitParam checks the wait parameter of GET /tasks/{id}/ for any
// query: it is taken once, as a duration from zero to MaxWait, or
// refused with a 400 and a JSON error; given twice, it is always refused.
func FuzzWaitParam(f *testing.F) {
	for _, q := range []string{"", "wait=30s", "wait=", "wait=5s&wait=600s", "wait=&wait=30s", "wait=-1s", "wait=1h", "wait=%zz", "wait=30"} {
		f.Add(q)
	}
	h := &Handler{cfg: Config{MaxWait: DefaultMaxWait}}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		r := &http.Request{URL: &url.URL{Path: "/tasks/x/", RawQuery: rawQuery}}
		w := httptest.NewRecorder()
		wait, ok := h.waitParam(w, r)
		given := len(r.URL.Query()["wait"])
		if ok {
			if w.Body.Len() != 0 || wait < 0 || wait > h.cfg.MaxWait {
				t.Fatalf("query %q: took a wait of %v and answered %q", rawQuery, wait, w.Body)
			}
			if given > 1 {
				t.Fatalf("query %q: took wait given %d times", rawQuery, given)
			}
			return
		}
		var e struct{ Error string }
		if w.Code != http.StatusBadRequest || json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == "" {
			t.Fatalf("query %q: refused with %d %q", rawQuery, w.Code, w.Body)
		}
	})
}
