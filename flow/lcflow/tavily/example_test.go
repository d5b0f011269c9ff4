package tavily_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/flowsrun/flows/flow/lcflow/tavily"
)

func ExampleNew() {
	// A stand-in for https://api.tavily.com; a program leaves BaseURL and
	// APIKey empty and sets TAVILY_API_KEY.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"query": "go", "results": [{"title": "The Go Programming Language", "url": "https://go.dev", "content": "Build simple, secure, scalable systems with Go.", "score": 0.98}], "response_time": 0.8}`)
	}))
	defer api.Close()

	search := tavily.New(tavily.Config{APIKey: "tvly-example", BaseURL: api.URL, MaxResults: 3})
	out, err := search.Call(context.Background(), "go")
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println(out)
	// Output:
	// {"query":"go","results":[{"title":"The Go Programming Language","url":"https://go.dev","content":"Build simple, secure, scalable systems with Go.","score":0.98}]}
}
