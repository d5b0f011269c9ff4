package pghistory

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// PostgreSQL stores neither the NUL character nor bytes that are not
// UTF-8, in text as in jsonb (SQLSTATE 22021 and 22P05). A task may hold
// them all the same (an error message with a NUL in it, an input
// "\u0000"), and a row refused for them would be refused on every try: Save
// writes each such character as U+FFFD instead, and List looks for the
// flow and owner so written. jsonb also refuses the escape of a UTF-16
// surrogate without its partner ("\ud800", SQLSTATE 22P02), which
// json.Valid accepts: Save writes it as U+FFFD too.

// pgText is s as PostgreSQL can store it: each NUL and each run of
// bytes that are not UTF-8 replaced by U+FFFD.
func pgText(s string) string {
	if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
}

// nulEscape is how JSON writes a NUL in a string.
var nulEscape = []byte(`\u0000`)

// pgJSON is the valid JSON document raw as a jsonb column takes it: when
// it holds a NUL (written \u0000), bytes that are not UTF-8 or the escape
// of a surrogate (\ud800 to \udfff, paired or not), the document is
// decoded and written again with each such character, in keys and
// strings, replaced by U+FFFD (a surrogate pair becomes the character it
// encodes); numbers are kept as written. Anything else is returned as it
// is.
func pgJSON(raw []byte) ([]byte, error) {
	if utf8.Valid(raw) && !bytes.Contains(raw, nulEscape) && !hasSurrogateEscape(raw) {
		return raw, nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	e := json.NewEncoder(&out)
	e.SetEscapeHTML(false)
	if err := e.Encode(pgValue(v)); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

// hasSurrogateEscape reports whether raw holds the text of a JSON escape
// of a UTF-16 surrogate, \uD800 to \uDFFF in either case (or an escaped
// backslash followed by such text, which costs pgJSON a decoding in
// vain).
func hasSurrogateEscape(raw []byte) bool {
	for {
		i := bytes.Index(raw, []byte(`\u`))
		if i < 0 || len(raw) < i+4 {
			return false
		}
		if d, c := raw[i+2]|0x20, raw[i+3]|0x20; d == 'd' && (c == '8' || c == '9' || c >= 'a' && c <= 'f') {
			return true
		}
		raw = raw[i+2:]
	}
}

// pgValue is the decoded JSON value v with pgText applied to its strings
// and keys.
func pgValue(v any) any {
	switch v := v.(type) {
	case string:
		return pgText(v)
	case []any:
		for i, e := range v {
			v[i] = pgValue(e)
		}
		return v
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[pgText(k)] = pgValue(e)
		}
		return out
	}
	return v
}
