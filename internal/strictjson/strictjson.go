// Package strictjson finds what encoding/json accepts silently in a JSON
// text although it is almost certainly a mistake or an attack: a key that
// appears twice in one object, of which encoding/json keeps the last
// (Check). Members lists an object's keys as encoding/json decodes them,
// exactly as written, for checks that encoding/json's case-insensitive
// matching of keys to fields cannot make.
package strictjson

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// CheckMember is Check for value, the value of the member named key of an
// object: the path of a duplicate it finds starts with key.
func CheckMember(key string, value []byte) error {
	s := scanner{data: value}
	if err := s.value(); err != nil {
		return err.within(key, true)
	}
	return nil
}

// DuplicateKeyError reports a key that appears twice in one object.
type DuplicateKeyError struct {
	// Path is the JSON path of the repeated key from the top of the text:
	// "flow", "where.city", "stops[2].city".
	Path string
	// keyFirst is set while Path starts with a key, not an index.
	keyFirst bool
}

// Error implements error.
func (e *DuplicateKeyError) Error() string {
	return "duplicate key " + strconv.Quote(e.Path)
}

// Check returns a *DuplicateKeyError for the first key that appears twice
// in one object of data, at any depth, and nil when there is none. Keys
// are compared as encoding/json compares them once decoded: "a" and
// "\u0061" are one key, and so are two invalid UTF-8 sequences, which both
// decode to U+FFFD.
//
// data should be valid JSON (json.Valid); Check does not validate it. On
// invalid JSON it returns nil or an error, never panics, and reads no
// further than len(data).
func Check(data []byte) error {
	s := scanner{data: data}
	if err := s.value(); err != nil {
		return err
	}
	return nil
}

// Members calls fn with the key (decoded as encoding/json decodes it) and
// the raw value of each member of the object data, in order, until fn
// returns an error, which Members returns. data should be a valid JSON
// object (json.Valid); Members checks neither its keys nor its values,
// and returns nil at once for a text that is not an object.
func Members(data []byte, fn func(key, value []byte) error) error {
	s := scanner{data: data, skim: true}
	s.ws()
	if s.i >= len(s.data) || s.data[s.i] != '{' {
		return nil
	}
	s.i++
	for {
		raw, ok := s.member()
		if !ok {
			return nil
		}
		key := decodeKey(raw)
		start := s.i
		s.value()
		if err := fn(key, s.data[start:s.i]); err != nil {
			return err
		}
	}
}

// scanner walks a JSON text. The path of a duplicate is built as the
// walk unwinds (see within), so a text without duplicates costs no
// allocation but the key sets of its larger objects.
type scanner struct {
	data []byte
	i    int
	// skim is set to walk without looking for duplicates.
	skim bool
}

// maxLinearKeys is how many keys of one object are compared one by one
// before they go into a map.
const maxLinearKeys = 16

func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value scans one value from s.i.
func (s *scanner) value() *DuplicateKeyError {
	s.ws()
	if s.i >= len(s.data) {
		return nil
	}
	switch s.data[s.i] {
	case '{':
		return s.object()
	case '[':
		return s.array()
	case '"':
		s.str()
		return nil
	default:
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case ',', ']', '}', ' ', '\t', '\n', '\r':
				return nil
			}
			s.i++
		}
		return nil
	}
}

// str skips a string starting at s.i (on its opening quote) and returns
// its raw contents, without the quotes.
func (s *scanner) str() []byte {
	s.i++ // the opening quote
	start := s.i
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case '\\':
			s.i += 2
			continue
		case '"':
			raw := s.data[start:s.i]
			s.i++
			return raw
		}
		s.i++
	}
	s.i = len(s.data)
	return s.data[start:]
}

// object scans an object from its opening brace.
func (s *scanner) object() *DuplicateKeyError {
	s.i++
	var (
		linear [maxLinearKeys][]byte
		n      int
		many   map[string]struct{}
	)
	for {
		key, ok := s.member()
		if !ok {
			return nil
		}
		if s.skim {
			s.value()
			continue
		}
		key = decodeKey(key)
		dup := false
		if many != nil {
			_, dup = many[string(key)]
			many[string(key)] = struct{}{}
		} else {
			for _, k := range linear[:n] {
				if string(k) == string(key) {
					dup = true
					break
				}
			}
			if n < maxLinearKeys {
				linear[n] = key
				n++
			} else {
				many = make(map[string]struct{}, 2*maxLinearKeys)
				for _, k := range linear {
					many[string(k)] = struct{}{}
				}
				many[string(key)] = struct{}{}
			}
		}
		if dup {
			return &DuplicateKeyError{Path: string(key), keyFirst: true}
		}
		if err := s.value(); err != nil {
			return err.within(string(key), true)
		}
	}
}

// member reads the next member of the object s is in: it returns the raw
// contents of its key's string and leaves s.i on its value. ok is false
// at the end of the object (s.i is then past it), or of a text that is not
// JSON.
func (s *scanner) member() (key []byte, ok bool) {
	for {
		s.ws()
		if s.i >= len(s.data) {
			return nil, false
		}
		switch s.data[s.i] {
		case '}':
			s.i++
			return nil, false
		case ',':
			s.i++
		case '"':
			key = s.str()
			s.ws()
			if s.i < len(s.data) && s.data[s.i] == ':' {
				s.i++
			}
			s.ws()
			return key, true
		default:
			return nil, false // not JSON: stop
		}
	}
}

// array scans an array from its opening bracket.
func (s *scanner) array() *DuplicateKeyError {
	s.i++
	for n := 0; ; n++ {
		s.ws()
		if s.i >= len(s.data) {
			return nil
		}
		switch s.data[s.i] {
		case ']':
			s.i++
			return nil
		case ',':
			s.i++
			n--
			continue
		case '}', ':':
			return nil // not JSON: stop
		}
		if err := s.value(); err != nil {
			return err.within("["+strconv.Itoa(n)+"]", false)
		}
	}
}

// within puts e's path under step, a key or an index ("[2]") of the
// value that holds it, and returns e.
func (e *DuplicateKeyError) within(step string, isKey bool) *DuplicateKeyError {
	if e.keyFirst {
		step += "."
	}
	e.Path, e.keyFirst = step+e.Path, isKey
	return e
}

// decodeKey returns raw, the contents of a key's string, as encoding/json
// decodes it: escapes resolved and invalid UTF-8 replaced by U+FFFD. A key
// that needs neither, the common case, is returned as it is.
func decodeKey(raw []byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return raw
	}
	quoted := make([]byte, 0, len(raw)+2)
	quoted = append(append(append(quoted, '"'), raw...), '"')
	var key string
	if json.Unmarshal(quoted, &key) != nil {
		return raw // not JSON; Check's result does not matter then
	}
	return []byte(key)
}
