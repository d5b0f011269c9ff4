package ssehttp

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/internal/strictjson"
)

func TestParseStart(t *testing.T) {
	tests := []struct {
		body   string
		name   string // the flow name when accepted
		inputs string // the raw inputs when accepted
		msg    string // part of the message when refused
	}{
		{body: `{"flow":"a"}`, name: "a"},
		{body: ` {"inputs":{"x":[1,{"y":2}]},"flow":"a"} `, name: "a", inputs: `{"x":[1,{"y":2}]}`},
		{body: `{"flow":"a","inputs":{"x":1,"x":2}}`, name: "a", inputs: `{"x":1,"x":2}`}, // the flow refuses these
		{body: `{"flow":"a","extra":{"flow":1,"FLOW":2}}`, name: "a"},
		{body: `{"flow":"a","Flows":1}`, name: "a"},
		{body: `{"flow":"a","flow":"a"}`, msg: `duplicate key "flow"`},
		{body: `{"inputs":null,"flow":"a","inputs":{}}`, msg: `duplicate key "inputs"`},
		{body: `{"flow":"a","extra":{"k":[{"z":1,"z":1}]}}`, msg: `duplicate key "extra.k[0].z"`},
		{body: `{"flow":"a","extra":1,"extra":2}`, msg: `duplicate key "extra"`},
		{body: `{"Flow":"a"}`, msg: `unknown key "Flow": keys are case-sensitive, did you mean "flow"?`},
		{body: `{"flow":"a","INPUTS":{}}`, msg: `unknown key "INPUTS": keys are case-sensitive, did you mean "inputs"?`},
		{body: `{"flow":"a","\u0066low":"b"}`, msg: `duplicate key "flow"`},
		{body: `{"flow":"a"`, msg: "not valid JSON"},
		{body: `{"flow":"a",}`, msg: "not valid JSON"},
		{body: `{"flow" "a"}`, msg: "not valid JSON"},
		{body: `{"flow":"a"}]`, msg: "after the JSON object"},
		{body: `[]`, msg: "must be a JSON object"},
		{body: `"flow"`, msg: "must be a JSON object"},
		{body: `{"flow":["a"]}`, msg: `"flow" must be a string`},
		{body: `{"inputs":{}}`, msg: `missing "flow"`},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			name, inputs, msg := parseStart([]byte(tt.body))
			if tt.msg != "" {
				assert.Contains(t, msg, tt.msg)
				return
			}
			assert.Empty(t, msg)
			assert.Equal(t, tt.name, name)
			assert.Equal(t, tt.inputs, string(inputs))
		})
	}
}

// FuzzParseStart checks parseStart against what it promises, on any body:
// it accepts exactly the JSON objects whose "flow" is a non-empty string,
// that have no key repeated in any object outside "inputs" and no
// top-level key equal to "flow" or "inputs" but for case; and then it
// returns the flow name and inputs that encoding/json finds.
func FuzzParseStart(f *testing.F) {
	for _, seed := range []string{
		`{"flow":"poem_flow","inputs":{}}`, `{"flow":"a","flow":"b"}`, `{"FLOW":"a"}`,
		`{"flow":"a","inputs":{"q":1,"q":2}}`, `{"flow":"a","x":{"y":1,"y":2}}`,
		`{"flow":"a","\u0069nputs":{}}`, `{"flow":"a"} {}`, `{"flow":1}`, `[]`, ``,
		`{"flow":"a","Inputs":null}`, "{\"flow\":\"\xff\"}", `{"flow":"\u017flow"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		name, inputs, msg := parseStart(body)
		want := acceptable(body)
		if (msg == "") != want {
			t.Fatalf("parseStart(%q): message %q, but acceptable is %v", body, msg, want)
		}
		if msg != "" {
			return
		}
		var req struct {
			Flow   string          `json:"flow"`
			Inputs json.RawMessage `json:"inputs"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			t.Fatalf("parseStart(%q) accepted what encoding/json refuses: %v", body, err)
		}
		if name != req.Flow || !bytes.Equal(inputs, req.Inputs) {
			t.Fatalf("parseStart(%q) = %q, %q; encoding/json finds %q, %q", body, name, inputs, req.Flow, req.Inputs)
		}
	})
}

// acceptable says, the slow way, whether parseStart must accept body.
func acceptable(body []byte) bool {
	if !json.Valid(body) {
		return false
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(body, &members) != nil || members == nil {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	_, _ = dec.Token()
	seen := map[string]bool{}
	for dec.More() {
		tok, _ := dec.Token()
		key := tok.(string)
		var value json.RawMessage
		_ = dec.Decode(&value)
		if seen[key] {
			return false
		}
		seen[key] = true
		if key != "flow" && key != "inputs" {
			if strings.EqualFold(key, "flow") || strings.EqualFold(key, "inputs") || strictjson.Check(value) != nil {
				return false
			}
		}
	}
	var name string
	return json.Unmarshal(members["flow"], &name) == nil && name != ""
}

// BenchmarkParseStart measures the strict parse of a typical start-task
// body.
func BenchmarkParseStart(b *testing.B) {
	body := []byte(`{"flow":"web_search_flow","inputs":{"question":"Why is the sky blue?","max_results":5}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, msg := parseStart(body); msg != "" {
			b.Fatal(msg)
		}
	}
}
