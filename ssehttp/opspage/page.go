package opspage

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// Refresh intervals of the page (Config.Refresh).
const (
	// DefaultRefresh is how often the page reads the stats, the listing
	// and the dead letters when Config.Refresh is zero.
	DefaultRefresh = 5 * time.Second
	// MinRefresh is the shortest Config.Refresh: each refresh is three
	// requests to the API.
	MinRefresh = 100 * time.Millisecond
)

// CSP is the Content-Security-Policy of every answer of the handler: the
// page may run its own script and style sheet and talk to its own origin,
// and nothing else; no inline script or style, no frame around it.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// ErrConfig is wrapped by the error of New for a Config it cannot serve.
var ErrConfig = errors.New("opspage: invalid config")

// Config configures the page.
type Config struct {
	// API is where the browser reaches the flows API, the ssehttp.Handler
	// whose Config.Inspector is set: an absolute path on the page's own
	// origin, such as "/" when the handler serves the site's root or
	// "/api/" when it is mounted there. A trailing slash is added when
	// missing. Empty means "/". Another origin is not allowed: the page
	// may talk to its own origin only (see CSP).
	API string
	// Refresh is how often the page reads the stats (one point of the
	// chart each time), the listing and the dead letters. Zero means
	// DefaultRefresh; less than MinRefresh is an error.
	Refresh time.Duration
}

// webFiles are the page's files; index.html is a template of the
// settings (see pageData).
//
//go:embed web
var webFiles embed.FS

// pageData is what index.html is filled in with: the settings the script
// reads from the page's meta elements.
type pageData struct {
	API       string
	RefreshMS int64
}

// asset is one file the handler serves.
type asset struct {
	contentType string
	body        []byte
}

// handler serves the page's three files.
type handler struct {
	assets map[string]asset // by path below the mount point, "" for the page
}

// New returns the handler of the page set up by cfg. It fails, wrapping
// ErrConfig, when cfg.API is not an absolute path on the page's origin or
// cfg.Refresh is out of range.
//
// The handler answers GET and HEAD of its root ("/" or "", so that both
// http.StripPrefix("/ops", h) and http.StripPrefix("/ops/", h) work), of
// app.js and of style.css, with the headers of a page that nothing may
// frame or sniff (see CSP); 404 for any other path, 405 for another
// method.
func New(cfg Config) (http.Handler, error) {
	api, err := apiPath(cfg.API)
	if err != nil {
		return nil, err
	}
	refresh := cfg.Refresh
	if refresh == 0 {
		refresh = DefaultRefresh
	}
	if refresh < MinRefresh {
		return nil, fmt.Errorf("%w: Refresh %v is shorter than %v", ErrConfig, refresh, MinRefresh)
	}
	tmpl, err := template.ParseFS(webFiles, "web/index.html")
	if err != nil {
		return nil, err // the embedded page is broken: a bug of this package
	}
	var page bytes.Buffer
	if err := tmpl.Execute(&page, pageData{API: api, RefreshMS: refresh.Milliseconds()}); err != nil {
		return nil, err
	}
	script, err := webFiles.ReadFile("web/app.js")
	if err != nil {
		return nil, err
	}
	style, err := webFiles.ReadFile("web/style.css")
	if err != nil {
		return nil, err
	}
	return &handler{assets: map[string]asset{
		"":          {"text/html; charset=utf-8", page.Bytes()},
		"app.js":    {"text/javascript; charset=utf-8", script},
		"style.css": {"text/css; charset=utf-8", style},
	}}, nil
}

// apiPath checks Config.API and returns it with its trailing slash.
func apiPath(s string) (string, error) {
	if s == "" {
		return "/", nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: API %q: %v", ErrConfig, s, err)
	case u.Scheme != "" || u.Host != "" || strings.HasPrefix(s, "//"):
		return "", fmt.Errorf("%w: API %q: the page may talk to its own origin only: give a path such as /api/", ErrConfig, s)
	case !strings.HasPrefix(s, "/"):
		return "", fmt.Errorf("%w: API %q is not an absolute path: give a path such as /api/", ErrConfig, s)
	case u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return "", fmt.Errorf("%w: API %q: a path without query or fragment", ErrConfig, s)
	}
	p := u.EscapedPath()
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	if path.Clean(p) != strings.TrimSuffix(p, "/") && p != "/" {
		return "", fmt.Errorf("%w: API %q: a clean path, without . or .. or //", ErrConfig, s)
	}
	return p, nil
}

// ServeHTTP serves the page, its script and its style sheet.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", CSP)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	a, ok := h.assets[strings.TrimPrefix(r.URL.Path, "/")]
	if !ok {
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("Content-Length", strconv.Itoa(len(a.body)))
	hdr.Set("Cache-Control", "no-cache")
	_, _ = w.Write(a.body)
}
