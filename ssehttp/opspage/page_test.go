package opspage_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/ssehttp/opspage"
)

// get serves one request of method to path through h and returns the
// answer with its body read.
func get(t *testing.T, h http.Handler, method, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	resp := rec.Result()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// mounted returns the page handler set up by cfg at /ops/ of a mux, with
// the prefix stripped as prefix says.
func mounted(t *testing.T, cfg opspage.Config, prefix string) http.Handler {
	t.Helper()
	h, err := opspage.New(cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ops/", http.StripPrefix(prefix, h))
	return mux
}

func TestServesThePageAndItsFiles(t *testing.T) {
	for _, prefix := range []string{"/ops", "/ops/"} {
		t.Run("StripPrefix "+prefix, func(t *testing.T) {
			h := mounted(t, opspage.Config{}, prefix)
			for _, tc := range []struct {
				path, contentType, contains string
			}{
				{"/ops/", "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
				{"/ops/app.js", "text/javascript; charset=utf-8", "'use strict';"},
				{"/ops/style.css", "text/css; charset=utf-8", ":root {"},
			} {
				resp, body := get(t, h, http.MethodGet, tc.path)
				require.Equal(t, http.StatusOK, resp.StatusCode, tc.path)
				assert.Equal(t, tc.contentType, resp.Header.Get("Content-Type"), tc.path)
				assert.Equal(t, opspage.CSP, resp.Header.Get("Content-Security-Policy"), tc.path)
				assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), tc.path)
				assert.Equal(t, "no-referrer", resp.Header.Get("Referrer-Policy"), tc.path)
				assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"), tc.path)
				assert.Contains(t, body, tc.contains, tc.path)
			}
		})
	}
}

func TestCSPIsStrict(t *testing.T) {
	for _, directive := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"} {
		assert.Contains(t, opspage.CSP, directive)
	}
	assert.NotContains(t, opspage.CSP, "unsafe", "no inline script or style, no eval")
}

func TestHeadAnswersWithoutBody(t *testing.T) {
	srv := httptest.NewServer(mounted(t, opspage.Config{}, "/ops"))
	t.Cleanup(srv.Close)
	_, page := get(t, srv.Config.Handler, http.MethodGet, "/ops/")
	resp, err := http.Head(srv.URL + "/ops/")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, body)
	assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	assert.Equal(t, int64(len(page)), resp.ContentLength)
}

func TestUnknownPathsAre404(t *testing.T) {
	h := mounted(t, opspage.Config{}, "/ops")
	for _, path := range []string{"/ops/index.html", "/ops/web/app.js", "/ops/app.js/", "/ops/nope", "/ops/style.css.map", "/ops/tasks/", "/elsewhere"} {
		resp, _ := get(t, h, http.MethodGet, path)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, path)
		if path != "/elsewhere" { // the mux's own 404
			assert.Equal(t, opspage.CSP, resp.Header.Get("Content-Security-Policy"), path)
			assert.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"), path)
		}
	}
}

func TestOtherMethodsAre405(t *testing.T) {
	h := mounted(t, opspage.Config{}, "/ops")
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		resp, _ := get(t, h, method, "/ops/app.js")
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, method)
		assert.Equal(t, "GET, HEAD", resp.Header.Get("Allow"), method)
	}
}

// metas returns the content of the page's flows-api and
// flows-refresh-ms meta elements.
func metas(t *testing.T, page string) (api, refresh string) {
	t.Helper()
	m := regexp.MustCompile(`<meta name="flows-api" content="([^"]*)">`).FindStringSubmatch(page)
	require.NotNil(t, m, "the page names the API")
	r := regexp.MustCompile(`<meta name="flows-refresh-ms" content="([^"]*)">`).FindStringSubmatch(page)
	require.NotNil(t, r, "the page names its refresh interval")
	return m[1], r[1]
}

func TestThePageIsToldWhereTheAPIIs(t *testing.T) {
	for _, tc := range []struct {
		cfg           opspage.Config
		api, interval string
	}{
		{opspage.Config{}, "/", "5000"},
		{opspage.Config{API: "/"}, "/", "5000"},
		{opspage.Config{API: "/api"}, "/api/", "5000"},
		{opspage.Config{API: "/api/flows/", Refresh: 250 * time.Millisecond}, "/api/flows/", "250"},
		{opspage.Config{API: "/my api/", Refresh: time.Minute}, "/my%20api/", "60000"},
		{opspage.Config{API: `/a"b/`}, "/a%22b/", "5000"},
	} {
		h := mounted(t, tc.cfg, "/ops")
		_, page := get(t, h, http.MethodGet, "/ops/")
		api, refresh := metas(t, page)
		assert.Equal(t, tc.api, api, "%+v", tc.cfg)
		assert.Equal(t, tc.interval, refresh, "%+v", tc.cfg)
	}
}

func TestBadConfigIsRefused(t *testing.T) {
	for _, tc := range []struct {
		cfg  opspage.Config
		want string
	}{
		{opspage.Config{API: "https://api.example.com/"}, "its own origin only"},
		{opspage.Config{API: "//api.example.com/"}, "its own origin only"},
		{opspage.Config{API: "api/"}, "not an absolute path"},
		{opspage.Config{API: "../api/"}, "not an absolute path"},
		{opspage.Config{API: "/api/?token=x"}, "without query"},
		{opspage.Config{API: "/api/#x"}, "without query"},
		{opspage.Config{API: "/a/../b/"}, "clean path"},
		{opspage.Config{API: "/a//b/"}, "clean path"},
		{opspage.Config{API: "/a/./b"}, "clean path"},
		{opspage.Config{API: "/%zz/"}, "invalid URL escape"},
		{opspage.Config{Refresh: 10 * time.Millisecond}, "shorter than 100ms"},
		{opspage.Config{Refresh: -time.Second}, "shorter than"},
	} {
		h, err := opspage.New(tc.cfg)
		require.ErrorIs(t, err, opspage.ErrConfig, "%+v", tc.cfg)
		assert.Contains(t, err.Error(), tc.want, "%+v", tc.cfg)
		assert.Nil(t, h)
	}
}

// TestNothingInlineInThePage checks the files for what the CSP would
// block, so that the page does not depend on the browser test alone to
// find it: inline scripts, style elements or attributes, event handler
// attributes, and script that writes HTML or styles.
func TestNothingInlineInThePage(t *testing.T) {
	h := mounted(t, opspage.Config{}, "/ops")
	_, page := get(t, h, http.MethodGet, "/ops/")
	_, script := get(t, h, http.MethodGet, "/ops/app.js")

	for _, m := range regexp.MustCompile(`<script[^>]*>`).FindAllString(page, -1) {
		assert.Contains(t, m, `src="app.js"`, "only the page's own script: %s", m)
	}
	assert.NotRegexp(t, `<script[^>]*>[^<]+</script>`, page, "no inline script")
	assert.NotRegexp(t, `(?i)<style`, page, "no style element")
	assert.NotRegexp(t, `(?i)\sstyle=`, page, "no style attribute")
	assert.NotRegexp(t, `(?i)\son[a-z]+=`, page, "no event handler attribute")
	assert.NotRegexp(t, `(?i)(href|src)="(https?:)?//`, page, "nothing from elsewhere")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", ".style.", "'style'", "setTimeout('"} {
		assert.NotContains(t, script, bad)
	}
	// Every control has a label, and the live regions are there.
	for _, id := range []string{"filter-state", "filter-flow"} {
		assert.Contains(t, page, `<label for="`+id+`">`, id)
	}
	assert.Contains(t, page, `id="announcer" class="announcer" role="status" aria-live="polite"`, "results of actions are announced")
	assert.Contains(t, page, `id="alert" class="alert" role="alert"`, "a refusal of the API is announced")
}
