package ssehttp

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultCORSMaxAge is how long a browser may keep a preflight answer when
// CORS.MaxAge is zero.
const DefaultCORSMaxAge = 10 * time.Minute

// apiRequestHeaders are the request headers the API reads, which a page on
// a listed origin may always send. A header that a route starts to read
// belongs here.
var apiRequestHeaders = []string{"Content-Type", "Last-Event-ID", IdempotencyKeyHeader}

// apiResponseHeaders are the answer headers, beyond those a browser always
// shows, that a page on a listed origin may read: Retry-After comes with
// every 503.
var apiResponseHeaders = []string{"Retry-After"}

// CORS lets web pages served from other origins use the API (Cross-Origin
// Resource Sharing), for a front end that is not served by the host of the
// API. Its zero value allows no other origin: browsers then keep pages of
// other origins from reading any answer, and their state-changing requests
// are refused with 403 by Config.CrossOrigin.
//
// For a listed origin, the Handler answers the browser's preflight
// requests (OPTIONS) on every route, names the origin in
// Access-Control-Allow-Origin on every answer (never "*"), and lets its
// requests to start-task and cancel-task pass the cross-origin protection.
// Requests from other origins are served as before. Every answer carries
// "Vary: Origin" once an origin is listed, so that shared caches keep the
// answers for different origins apart.
type CORS struct {
	// AllowedOrigins are the origins whose pages may use the API, each
	// written as a browser sends it in the Origin header:
	// scheme://host[:port], with no path and no trailing slash, as in
	// "https://app.example.com" or "http://localhost:5173". Scheme and
	// host are compared without regard to case, and a default port (:443
	// for https, :80 for http) may be left out or not. "*" and "null" are
	// refused: every origin is listed by name. Empty means none.
	AllowedOrigins []string

	// AllowCredentials lets the pages of the listed origins send the
	// user's cookies and HTTP authentication with their requests (fetch
	// with credentials: "include", EventSource with withCredentials: true)
	// and read the answers (Access-Control-Allow-Credentials: true). Off
	// by default: turn it on only when Config.Identify reads cookies,
	// since every listed page can then act as the signed-in user.
	AllowCredentials bool

	// AllowedHeaders are the request headers a page may send besides
	// those the API reads itself (Content-Type, Last-Event-ID and
	// Idempotency-Key), for
	// example "Authorization" for an Identify hook that reads it.
	AllowedHeaders []string

	// MaxAge is how long a browser may cache a preflight answer before
	// asking again. Zero means DefaultCORSMaxAge; browsers cap it (Chromium
	// at two hours).
	MaxAge time.Duration
}

// Validate reports what is wrong with c, or nil: an origin that is not
// scheme://host[:port], a header name that is not a token, a negative
// MaxAge, or AllowCredentials without an origin. New panics with the same
// error, so a host that reads the origins from its environment can call
// Validate first and exit with the message instead.
func (c CORS) Validate() error {
	_, err := newCORSPolicy(c)
	return err
}

// corsPolicy is a CORS configuration checked and prepared for serving.
// The zero policy (no origin listed) changes no answer.
type corsPolicy struct {
	origins     map[string]bool
	credentials bool
	// allowHeaders, exposeHeaders and maxAge are the header values of
	// the answers, joined once.
	allowHeaders, exposeHeaders, maxAge string
}

// newCORSPolicy checks c and prepares its answers.
func newCORSPolicy(c CORS) (*corsPolicy, error) {
	var errs []error
	p := &corsPolicy{origins: make(map[string]bool, len(c.AllowedOrigins)), credentials: c.AllowCredentials}
	for _, o := range c.AllowedOrigins {
		norm, err := normalizeOrigin(o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.origins[norm] = true
	}
	headers := slices.Clone(apiRequestHeaders)
	for _, name := range c.AllowedHeaders {
		if !validHeaderName(name) {
			errs = append(errs, fmt.Errorf("CORS.AllowedHeaders: %q is not a header name", name))
			continue
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		if !slices.Contains(headers, name) {
			headers = append(headers, name)
		}
	}
	if c.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("CORS.MaxAge: negative (%v)", c.MaxAge))
	}
	if c.AllowCredentials && len(c.AllowedOrigins) == 0 {
		errs = append(errs, errors.New("CORS.AllowCredentials without AllowedOrigins: list the origins that may send credentials"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	p.allowHeaders = strings.Join(headers, ", ")
	p.exposeHeaders = strings.Join(apiResponseHeaders, ", ")
	maxAge := c.MaxAge
	if maxAge == 0 {
		maxAge = DefaultCORSMaxAge
	}
	p.maxAge = strconv.FormatInt(int64(maxAge/time.Second), 10)
	return p, nil
}

// normalizeOrigin returns o as a browser writes it in an Origin header:
// scheme and host in lower case, without a default port. It refuses
// anything that is not scheme://host[:port].
func normalizeOrigin(o string) (string, error) {
	switch o {
	case "*":
		return "", errors.New(`CORS.AllowedOrigins: "*" is not allowed: list each origin, as in "https://app.example.com"`)
	case "null":
		return "", errors.New(`CORS.AllowedOrigins: "null" is not allowed: it is the origin of sandboxed and file: pages, which any site can make`)
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || !strings.EqualFold(u.Scheme+"://"+u.Host, o) {
		return "", fmt.Errorf("CORS.AllowedOrigins: %q is not an origin: write scheme://host[:port] with no path or trailing slash, as in \"https://app.example.com\"", o)
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if port := u.Port(); scheme == "https" && port == "443" || scheme == "http" && port == "80" {
		host = strings.TrimSuffix(host, ":"+port)
	}
	return scheme + "://" + host, nil
}

// validHeaderName reports whether name is an HTTP token, as a header name
// must be.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// allows reports whether origin, the value of a request's Origin header,
// is listed.
func (p *corsPolicy) allows(origin string) bool {
	return origin != "" && p.origins[origin]
}

// annotate adds the CORS headers to the answer of r before it is served:
// Vary: Origin on every answer once an origin is listed, and for a listed
// origin the permission to read it.
func (p *corsPolicy) annotate(w http.ResponseWriter, r *http.Request) {
	if len(p.origins) == 0 {
		return
	}
	hdr := w.Header()
	hdr.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if !p.allows(origin) {
		return
	}
	hdr.Set("Access-Control-Allow-Origin", origin)
	if p.credentials {
		hdr.Set("Access-Control-Allow-Credentials", "true")
	}
	if r.Method != http.MethodOptions {
		hdr.Set("Access-Control-Expose-Headers", p.exposeHeaders)
	}
}

// preflight returns the OPTIONS handler of a route that serves methods
// (as in "GET, HEAD"). It answers a browser's preflight request from a
// listed origin with 204 and what the route accepts, and refuses one from
// any other origin with 403. An OPTIONS request that is not a preflight
// gets 204 and the route's Allow header.
func (h *Handler) preflight(methods string) http.HandlerFunc {
	allow := methods + ", OPTIONS"
	return func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Set("Allow", allow)
		if r.Header.Get("Access-Control-Request-Method") == "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if !h.cors.allows(r.Header.Get("Origin")) {
			h.cfg.Logger.DebugContext(r.Context(), "flows: preflight from an origin not listed", "path", r.URL.Path, "origin", r.Header.Get("Origin"))
			writeError(w, http.StatusForbidden, "cross-origin requests from this origin are not allowed (ssehttp.CORS.AllowedOrigins)")
			return
		}
		hdr.Set("Access-Control-Allow-Methods", methods)
		hdr.Set("Access-Control-Allow-Headers", h.cors.allowHeaders)
		hdr.Set("Access-Control-Max-Age", h.cors.maxAge)
		hdr.Add("Vary", "Access-Control-Request-Method")
		hdr.Add("Vary", "Access-Control-Request-Headers")
		w.WriteHeader(http.StatusNoContent)
	}
}
