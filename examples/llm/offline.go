package llm

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tmc/langchaingo/llms"
)

// DefaultOfflineDelay is the pause between the chunks NewOffline streams,
// so that a demo shows text being written.
const DefaultOfflineDelay = 25 * time.Millisecond

// Offline is a language model that needs no network and no key: it answers
// from fixed scripts chosen by what the prompt asks, so that the examples,
// the demo page and the tests run anywhere. The same prompt always gets
// the same answer. It recognises, in this order:
//
//   - an agent prompt in langchaingo's MRKL format (instructions naming
//     "Action Input:" and "Final Answer:"): with no observation yet, it
//     asks for a tool, the calculator for a question holding arithmetic
//     (digits and + - * /), else a tool whose name holds "search", else the
//     first tool, with the expression or the question as input; once the
//     prompt holds an observation, it gives a final answer quoting it;
//   - a prompt holding search results (a JSON object with a "results"
//     list, as the tavily tool returns): an answer quoting the first two
//     results with their titles and URLs;
//   - "poem about X": a four-line poem about X;
//   - a prompt mentioning a theme: a theme from a fixed list, picked by a
//     hash of the prompt;
//   - any other prompt mentioning a poem: a poem about a theme picked so;
//   - anything else: a short reply saying what it is.
//
// When the call sets a streaming function, the answer is streamed in
// word-sized chunks (see Chunks), Delay apart. A call returns the context's
// error as soon as its context is done.
type Offline struct {
	// Delay is the pause between streamed chunks; zero streams at once.
	Delay time.Duration
}

var _ llms.Model = (*Offline)(nil)

// NewOffline returns an Offline model streaming with DefaultOfflineDelay.
func NewOffline() *Offline { return &Offline{Delay: DefaultOfflineDelay} }

// GenerateContent answers the text of messages with Reply.
func (o *Offline) GenerateContent(ctx context.Context, messages []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	return respond(ctx, o.Reply(promptText(messages)), o.Delay, options)
}

// Call implements llms.Model.
func (o *Offline) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, o, prompt, options...)
}

// Reply returns the model's answer to prompt, as GenerateContent does.
func (o *Offline) Reply(prompt string) string {
	if isAgentPrompt(prompt) {
		return agentReply(prompt)
	}
	if res, ok := findSearchResults(prompt); ok {
		return searchAnswer(res)
	}
	lower := strings.ToLower(prompt)
	if i := strings.Index(lower, "poem about "); i >= 0 {
		return poem(subjectAt(prompt[i+len("poem about "):]))
	}
	if strings.Contains(lower, "theme") {
		return pickTheme(prompt)
	}
	if strings.Contains(lower, "poem") {
		return poem(pickTheme(prompt))
	}
	return "I am the " + OfflineLabel + ": I can suggest a theme, write a short poem, " +
		"answer from search results and choose a tool for an agent. Set GEMINI_API_KEY, " +
		"OPENAI_API_KEY or OLLAMA_HOST to use a real model."
}

var themes = []string{
	"the first snow of winter",
	"a lighthouse at dusk",
	"the smell of rain on warm stones",
	"an old bicycle leaning on a fence",
	"the last train home",
	"a garden after the storm",
}

func pickTheme(prompt string) string {
	h := fnv.New32a()
	h.Write([]byte(prompt))
	return themes[h.Sum32()%uint32(len(themes))]
}

var poemTemplates = []string{
	"Of %s I write a quiet line,\nthe kind of thing that takes its time,\nthat waits until the world is still\nand then comes in, as good things will.",
	"%s at the edge of the day,\nwhere the loud hours fall away:\nhold it gently, let it be,\nsmall and bright and free.",
}

func poem(subject string) string {
	h := fnv.New32a()
	h.Write([]byte(subject))
	tmpl := poemTemplates[h.Sum32()%uint32(len(poemTemplates))]
	if strings.HasPrefix(tmpl, "%s") {
		subject = capitalize(subject)
	}
	return fmt.Sprintf(tmpl, subject)
}

// subjectAt returns the subject that starts s: up to the end of the
// sentence or line, without quotes.
func subjectAt(s string) string {
	if i := strings.IndexAny(s, ".!?\n"); i >= 0 {
		s = s[:i]
	}
	s = strings.Trim(strings.TrimSpace(s), `"'“”`)
	if s == "" {
		return "nothing in particular"
	}
	return s
}

func capitalize(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

type searchResults struct {
	Answer  string `json:"answer"`
	Results []struct {
		Title   string `json:"title"`
		URL     string `json:"url"`
		Content string `json:"content"`
	} `json:"results"`
}

// findSearchResults looks for a JSON object with a "results" list in the
// prompt.
func findSearchResults(prompt string) (searchResults, bool) {
	rest := prompt
	for tries := 0; tries < 50; tries++ {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		rest = rest[i:]
		var fields map[string]json.RawMessage
		if json.NewDecoder(strings.NewReader(rest)).Decode(&fields) == nil {
			if raw, ok := fields["results"]; ok {
				var res searchResults
				if json.Unmarshal(raw, &res.Results) == nil {
					_ = json.Unmarshal(fields["answer"], &res.Answer) // an absent or odd answer stays empty
					return res, true
				}
			}
		}
		rest = rest[1:]
	}
	return searchResults{}, false
}

func searchAnswer(res searchResults) string {
	if len(res.Results) == 0 {
		return "The search found nothing, so I cannot answer from the web."
	}
	var b strings.Builder
	b.WriteString("Based on the search results:")
	if res.Answer != "" {
		b.WriteString(" " + res.Answer)
	}
	for _, r := range res.Results[:min(2, len(res.Results))] {
		fmt.Fprintf(&b, " %s (%s, %s)", shorten(strings.TrimSpace(r.Content), 300), r.Title, r.URL)
	}
	return b.String()
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isAgentPrompt(p string) bool {
	return strings.Contains(p, "Action Input:") && strings.Contains(p, "Final Answer:")
}

var (
	toolListRE   = regexp.MustCompile(`should be one of \[([^\]]*)\]`)
	arithmeticRE = regexp.MustCompile(`\(?\d+(?:\.\d+)?(?:\s*[-+*/]\s*\(?\s*\d+(?:\.\d+)?\s*\)?)+`)
)

// agentReply plays one turn of a MRKL agent: choose a tool, or answer from
// the last observation.
func agentReply(p string) string {
	question, scratchpad := p, ""
	if i := strings.LastIndex(p, "Question:"); i >= 0 {
		question = p[i+len("Question:"):]
		if j := strings.IndexByte(question, '\n'); j >= 0 {
			question, scratchpad = question[:j], question[j+1:]
		}
	}
	question = strings.TrimSpace(question)

	if i := strings.LastIndex(scratchpad, "Observation:"); i >= 0 {
		obs := strings.TrimSpace(scratchpad[i+len("Observation:"):])
		answer := "The answer is " + obs + "."
		if res, ok := findSearchResults(obs); ok {
			answer = searchAnswer(res)
		}
		return "Thought: I now know the final answer.\nFinal Answer: " + answer
	}

	var toolNames []string
	if m := toolListRE.FindStringSubmatch(p); m != nil {
		for t := range strings.SplitSeq(m[1], ",") {
			if t = strings.TrimSpace(t); t != "" {
				toolNames = append(toolNames, t)
			}
		}
	}
	if len(toolNames) == 0 {
		return "Thought: I have no tool to use.\nFinal Answer: I cannot answer " + question + " without tools."
	}
	tool, input := toolNames[0], question
	for _, t := range toolNames {
		if strings.Contains(strings.ToLower(t), "search") {
			tool = t
			break
		}
	}
	if expr := arithmeticRE.FindString(question); expr != "" {
		for _, t := range toolNames {
			if strings.EqualFold(t, "calculator") {
				tool, input = t, strings.TrimSpace(expr)
				break
			}
		}
	}
	return fmt.Sprintf("Thought: I should use the %s tool.\nAction: %s\nAction Input: %s", tool, tool, input)
}
