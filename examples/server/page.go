package main

import (
	"embed"
	"net/http"
)

// webFiles is the demo page: plain HTML, CSS and JavaScript, no framework,
// nothing fetched from elsewhere, so it works offline.
//
//go:embed web
var webFiles embed.FS

// pageCSP allows the page its own script, style and API and nothing else.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// mountPage adds the demo page to mux: the page at exactly GET /, its
// script and style sheet beside it. The page uses relative URLs only, so it
// works wherever the mux is mounted.
func mountPage(mux *http.ServeMux) {
	mux.Handle("GET /{$}", webFile("web/index.html"))
	mux.Handle("GET /app.js", webFile("web/app.js"))
	mux.Handle("GET /style.css", webFile("web/style.css"))
}

func webFile(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, webFiles, name)
	})
}
