package strictjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/strictjson"
)

func TestCheck(t *testing.T) {
	many := func(dupAt int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range 40 {
			fmt.Fprintf(&b, `"k%d":%d,`, i, i)
		}
		fmt.Fprintf(&b, `"k%d":0}`, dupAt)
		return b.String()
	}
	tests := []struct {
		name string
		json string
		dup  string // the path of the duplicate; "" for none
	}{
		{name: "scalar", json: `1`},
		{name: "empty object", json: `{}`},
		{name: "distinct keys", json: `{"flow":"a","inputs":{"flow":"b"}}`},
		{name: "same key in sibling objects", json: `[{"a":1},{"a":2}]`},
		{name: "same key at two depths", json: `{"a":{"a":{"a":1}}}`},
		{name: "keys differing in case", json: `{"flow":1,"FLOW":2}`},
		{name: "top level", json: `{"flow":"a","flow":"b"}`, dup: "flow"},
		{name: "nested", json: `{"inputs":{"where":{"city":"A","city":"B"}}}`, dup: "inputs.where.city"},
		{name: "in an array", json: `{"stops":[{"c":1},{"c":2,"c":3}]}`, dup: "stops[1].c"},
		{name: "array of arrays", json: `[[1],[{"x":1,"x":1}]]`, dup: "[1][0].x"},
		{name: "escaped spelling", json: `{"a":1,"\u0061":2}`, dup: "a"},
		{name: "escaped quote", json: `{"a\"b":1,"a\u0022b":2}`, dup: `a"b`},
		{name: "invalid UTF-8 decodes to one key", json: "{\"\xff\":1,\"\xfe\":2}", dup: "\ufffd"},
		{name: "strings that look like keys", json: `{"a":"\"a\":1","b":["a","a"]}`},
		{name: "after a nested object", json: `{"a":{"b":1},"c":[1,2],"a":3}`, dup: "a"},
		{name: "many keys, no duplicate", json: many(-1)},
		{name: "many keys, duplicate past the linear set", json: many(30), dup: "k30"},
		{name: "many keys, duplicate in the linear set", json: many(3), dup: "k3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.True(t, json.Valid([]byte(tt.json)), "test input must be JSON")
			err := strictjson.Check([]byte(tt.json))
			dup, found := reference(t, []byte(tt.json))
			require.Equal(t, tt.dup != "", found, "the reference agrees with the table")
			assert.Equal(t, tt.dup, dup, "the reference agrees with the table")
			if tt.dup == "" {
				assert.NoError(t, err)
				return
			}
			var de *strictjson.DuplicateKeyError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, tt.dup, de.Path)
			assert.Equal(t, fmt.Sprintf("duplicate key %q", tt.dup), err.Error())
		})
	}
}

func TestCheckAllocations(t *testing.T) {
	data := []byte(`{"flow":"web_search_flow","inputs":{"question":"why","stops":[{"city":"A"},{"city":"B"}]}}`)
	allocs := testing.AllocsPerRun(100, func() {
		if strictjson.Check(data) != nil {
			t.Fatal("duplicate found")
		}
	})
	assert.Zero(t, allocs, "a small text without duplicates costs no allocation")
}

// FuzzCheck compares Check with a reference built on json.Decoder's
// tokens, which decodes keys exactly as encoding/json does, on every valid
// JSON text; on invalid ones Check must only not panic.
func FuzzCheck(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"a":1,"a":2}`, `{"a":{"b":[{"c":1,"c":2}]}}`, `{"a":1,"\u0061":2}`,
		"{\"\xff\":1,\"\xfe\":2}", `[1,"x",{"y":null}]`, `{"a":"}","b":"{"}`, `{"a\\":1,"a\\\\":2}`,
		`{"flow":"x","inputs":{"q":"a","Q":"b"}}`, `{"a":`, `{"a" 1}`, `[1,,2]`, `"unterminated`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := strictjson.Check(data)
		if !json.Valid(data) {
			return
		}
		want, found := reference(t, data)
		if !found {
			if err != nil {
				t.Fatalf("Check(%q) = %v, want no duplicate", data, err)
			}
			return
		}
		var de *strictjson.DuplicateKeyError
		if !errors.As(err, &de) || de.Path != want {
			t.Fatalf("Check(%q) = %v, want duplicate %q", data, err, want)
		}
	})
}

// reference returns the path of the first duplicate key of data, valid
// JSON, and whether there is one: a slow and obvious walk over
// json.Decoder's tokens.
func reference(t *testing.T, data []byte) (string, bool) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var walk func(path string, top bool) (string, bool, error)
	walk = func(path string, top bool) (string, bool, error) {
		tok, err := dec.Token()
		if err != nil {
			return "", false, err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return "", false, err
				}
				key := k.(string)
				p := key
				if !top {
					p = path + "." + key
				}
				if seen[key] {
					return p, true, nil
				}
				seen[key] = true
				if dup, found, err := walk(p, false); found || err != nil {
					return dup, found, err
				}
			}
			_, err = dec.Token()
			return "", false, err
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if dup, found, err := walk(fmt.Sprintf("%s[%d]", path, i), false); found || err != nil {
					return dup, found, err
				}
			}
			_, err = dec.Token()
			return "", false, err
		}
		return "", false, nil
	}
	dup, found, err := walk("", true)
	if err != nil && err != io.EOF {
		t.Fatalf("reference on %q: %v", data, err)
	}
	return dup, found
}

type member struct{ key, value string }

func TestMembers(t *testing.T) {
	var got []member
	err := strictjson.Members([]byte(` { "a" : 1 , "\u0062":{"c":[1, 2]},"a":"x\"y" } `), func(k, v []byte) error {
		got = append(got, member{string(k), string(v)})
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []member{{"a", "1"}, {"b", `{"c":[1, 2]}`}, {"a", `"x\"y"`}}, got)

	stop := errors.New("stop")
	n := 0
	err = strictjson.Members([]byte(`{"a":1,"b":2}`), func(k, v []byte) error { n++; return stop })
	assert.ErrorIs(t, err, stop)
	assert.Equal(t, 1, n, "Members stops at fn's first error")

	for _, notObject := range []string{`[{"a":1}]`, `"a"`, ``} {
		assert.NoError(t, strictjson.Members([]byte(notObject), func(k, v []byte) error { return stop }), notObject)
	}
}

// FuzzMembers compares Members with json.Decoder's tokens on every valid
// JSON object; on other texts Members must only not panic.
func FuzzMembers(f *testing.F) {
	for _, seed := range []string{`{}`, `{"a":1,"a":2}`, ` {"a" : [ 1 , {"b":"}"} ] , "\u00e9":null} `, `{"a":`, `[1]`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got []member
		_ = strictjson.Members(data, func(k, v []byte) error {
			got = append(got, member{string(k), string(v)})
			return nil
		})
		var obj map[string]json.RawMessage
		if !json.Valid(data) || json.Unmarshal(data, &obj) != nil || obj == nil {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		var want []member
		_, _ = dec.Token()
		for dec.More() {
			k, _ := dec.Token()
			var v json.RawMessage
			require.NoError(t, dec.Decode(&v))
			want = append(want, member{k.(string), string(v)})
		}
		require.Equal(t, want, got, "members of %q", data)
	})
}
