package opspage_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
	"github.com/flowsrun/flows/ssehttp/opspage"
)

// Example mounts the API under /api/ and the operators' page at /ops/,
// telling the page where the API is. In a real host, Config.Identify of
// the API names the operators (Principal.Operator): the page is served
// to anyone, and its requests carry the browser's cookies, so the API
// decides what each user sees and does.
func Example() {
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	backend := queue.NewMemory(queue.MemoryConfig{})
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{})
	api := ssehttp.New(ssehttp.Config{
		Queue:     broker,
		Progress:  store,
		Inspector: queue.NewInspector(backend, store, queue.InspectorConfig{}),
	})
	ops, err := opspage.New(opspage.Config{API: "/api/"})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", http.StripPrefix("/api", api))
	mux.Handle("/ops/", http.StripPrefix("/ops", ops))
	srv := httptest.NewServer(mux) // in a real host: http.ListenAndServe(":8080", mux)
	defer srv.Close()

	for _, path := range []string{"/ops/", "/ops/app.js", "/api/stats/"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Println(path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Output:
	// /ops/ 200 text/html; charset=utf-8
	// /ops/app.js 200 text/javascript; charset=utf-8
	// /api/stats/ 200 application/json
}
