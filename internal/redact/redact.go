// Package redact keeps credentials out of log lines, error texts and HTTP
// answers: the password of a URL's userinfo, the values of query
// parameters that carry secrets (password, token, key, signature...), and
// the credentials of Authorization-like "Bearer ..." or "Basic ..."
// values, each replaced by Mask.
//
// URL redacts a URL given on its own, even one that does not parse (a
// mistyped REDIS_URL is exactly when it gets logged). Text redacts every
// URL it finds in free text, as in the error of an HTTP client. Error
// wraps an error so that its text is redacted while errors.Is and
// errors.As still see the original.
package redact

import (
	"errors"
	"regexp"
	"strings"
)

// Mask replaces a credential.
const Mask = "xxxxx"

// secretParams are the query parameters whose values are credentials,
// lowercased.
var secretParams = map[string]bool{
	"password": true, "passwd": true, "pwd": true, "pass": true,
	"secret": true, "client_secret": true,
	"token": true, "access_token": true, "refresh_token": true, "id_token": true, "auth_token": true,
	"auth": true, "authorization": true, "credential": true, "credentials": true,
	"key": true, "api_key": true, "apikey": true, "api-key": true, "x-api-key": true,
	"sig": true, "signature": true, "x-amz-signature": true, "x-amz-security-token": true,
	"x-goog-signature": true, "x-goog-credential": true, "sentinel_password": true,
}

// URL returns raw with the password of its userinfo and the values of its
// secret query parameters replaced by Mask, and nothing else changed. raw
// need not parse as a URL: the userinfo is what comes between "://" (or a
// leading "//") and the last "@" before the first "/", the query what
// follows "?".
func URL(raw string) string {
	out, _ := redactURL(raw)
	return out
}

// Secrets returns the credentials raw carries, as written: the password of
// its userinfo and the values of its secret query parameters, in both
// their written and their decoded form. Error takes them, to redact the
// text of an error about raw whose wording Text cannot foresee (a parser
// that quotes only part of it, say).
func Secrets(raw string) []string {
	_, secrets := redactURL(raw)
	return secrets
}

// redactURL redacts raw (see URL) and returns the credentials it masked.
func redactURL(raw string) (string, []string) {
	var secrets []string
	rest, frag, hasFrag := strings.Cut(raw, "#")
	head, query, hasQuery := strings.Cut(rest, "?")
	start := -1 // where the authority starts
	if strings.HasPrefix(head, "//") {
		start = 2
	} else if i := strings.Index(head, "://"); i >= 0 && isScheme(head[:i]) {
		start = i + 3
	}
	if start >= 0 {
		auth := head[start:]
		if j := strings.IndexByte(auth, '/'); j >= 0 {
			auth = auth[:j]
		}
		if at := strings.LastIndexByte(auth, '@'); at >= 0 {
			if user, pass, ok := strings.Cut(auth[:at], ":"); ok && pass != "" {
				secrets = appendSecret(secrets, pass, false)
				head = head[:start] + user + ":" + Mask + head[start+at:]
			}
		}
	}
	if hasQuery {
		params := strings.Split(query, "&")
		for k, p := range params {
			name, value, ok := strings.Cut(p, "=")
			if ok && value != "" && isSecretParam(name) {
				secrets = appendSecret(secrets, value, true)
				params[k] = name + "=" + Mask
			}
		}
		head += "?" + strings.Join(params, "&")
	}
	if hasFrag {
		head += "#" + frag
	}
	return head, secrets
}

// isScheme reports whether s is a URL scheme: a letter, then letters,
// digits, "+", "-" or ".".
func isScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}

// isSecretParam reports whether the query parameter name, as written,
// carries a credential.
func isSecretParam(name string) bool {
	if dec, err := unescape(name, true); err == nil {
		name = dec
	}
	return secretParams[strings.ToLower(name)]
}

// appendSecret appends s and, when it differs, its percent-decoded form;
// in a query (plus), "+" decodes to a space.
func appendSecret(secrets []string, s string, plus bool) []string {
	secrets = append(secrets, s)
	if dec, err := unescape(s, plus); err == nil && dec != s && dec != "" {
		secrets = append(secrets, dec)
	}
	return secrets
}

// unescape decodes %XX escapes, and "+" as a space when plus is set, as
// url.QueryUnescape and url.PathUnescape do.
func unescape(s string, plus bool) (string, error) {
	if !strings.ContainsAny(s, "%+") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+' && plus:
			b.WriteByte(' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case c == '%':
			return "", errors.New("bad escape")
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

var (
	// urlInText finds URLs in free text: a scheme, "://", and everything
	// up to a space, a quote or a bracket that would end it in prose or in
	// Go's %q.
	urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>` + "`" + `]+`)
	// authInText finds what may be the credentials of an Authorization
	// value (see isCredential).
	authInText = regexp.MustCompile(`\b(Bearer|Basic|bearer|basic) +([A-Za-z0-9._~+/=-]{8,})`)
)

// Text returns s with the credentials of every URL in it (see URL) and of
// every "Bearer ..." or "Basic ..." value replaced by Mask.
func Text(s string) string {
	if strings.Contains(s, "://") {
		s = urlInText.ReplaceAllStringFunc(s, URL)
	}
	return authInText.ReplaceAllStringFunc(s, func(m string) string {
		scheme, cred, _ := strings.Cut(m, " ")
		if !isCredential(strings.TrimLeft(cred, " ")) {
			return m // "Basic authentication required"
		}
		return scheme + " " + Mask
	})
}

// isCredential tells a token or base64 credential from a word of prose: it
// has a digit, a symbol, or a capital letter past its first.
func isCredential(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9', strings.IndexByte("._~+/=-", c) >= 0, i > 0 && 'A' <= c && c <= 'Z':
			return true
		}
	}
	return false
}

// Error returns err with its text redacted by Text and each of secrets (a
// password from a config, say; see Secrets) replaced by Mask wherever it
// appears. errors.Is and errors.As see err through it; nil stays nil.
func Error(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, Mask)
		}
	}
	msg = Text(msg)
	if msg == err.Error() {
		return err
	}
	return &redacted{msg: msg, err: err}
}

// redacted is an error whose text is redacted.
type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }
