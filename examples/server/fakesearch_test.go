package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
)

// fakeTavily is a stand-in for Tavily's search API (POST /search) for the
// browser tests. It answers every search with two made-up results about
// the query; a query containing "hold" waits until release first, so that
// a task stays running for as long as a test needs, and one containing
// "fail" is answered 500, so that its task fails.
type fakeTavily struct {
	mu      sync.Mutex
	queries []string
	hold    chan struct{}
	once    sync.Once
}

func newFakeTavily() *fakeTavily { return &fakeTavily{hold: make(chan struct{})} }

// fakeResultTitle is the title of the first result for query.
func fakeResultTitle(query string) string { return "Fake result about " + query }

func (f *fakeTavily) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/search" {
		http.NotFound(w, r)
		return
	}
	var req struct {
		Query string `json:"query"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.queries = append(f.queries, req.Query)
	f.mu.Unlock()
	if strings.Contains(req.Query, "fail") {
		http.Error(w, "made-up failure", http.StatusInternalServerError)
		return
	}
	if strings.Contains(req.Query, "hold") {
		select {
		case <-f.hold:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"query": req.Query,
		"results": []map[string]any{
			{"title": fakeResultTitle(req.Query), "url": "https://example.test/1", "content": "Made up for the browser test.", "score": 0.9},
			{"title": "Another fake result", "url": "https://example.test/2", "content": "Also made up.", "score": 0.5},
		},
	})
}

// release lets the held searches, and all later ones, answer.
func (f *fakeTavily) release() { f.once.Do(func() { close(f.hold) }) }

// seen returns the queries searched so far.
func (f *fakeTavily) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.queries...)
}
