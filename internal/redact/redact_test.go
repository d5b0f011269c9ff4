package redact_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/internal/redact"
)

func TestURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis://:s3cret@127.0.0.1:6379/0", "redis://:xxxxx@127.0.0.1:6379/0"},
		{"rediss://default:s3cret@cache.example:6380", "rediss://default:xxxxx@cache.example:6380"},
		{"redis://user@host", "redis://user@host"},
		{"redis://user:p@ss:w0rd@host:6379", "redis://user:xxxxx@host:6379"},
		{"redis://user:pa ss@host:bad/0", "redis://user:xxxxx@host:bad/0"},
		{"https://api.example/v1?key=AIza123&model=m", "https://api.example/v1?key=xxxxx&model=m"},
		{"https://x.example/p?Token=a&access_token=b&X-Amz-Signature=c&q=keep#frag", "https://x.example/p?Token=xxxxx&access_token=xxxxx&X-Amz-Signature=xxxxx&q=keep#frag"},
		{"https://x.example/p?%6Bey=enc", "https://x.example/p?%6Bey=xxxxx"},
		{"https://u:p@x.example/a@b?password=&pwd=z", "https://u:xxxxx@x.example/a@b?password=&pwd=xxxxx"},
		{"unix://:pw@/tmp/redis.sock", "unix://:xxxxx@/tmp/redis.sock"},
		{"not a url", "not a url"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			assert.Equal(t, tt.want, redact.URL(tt.in))
		})
	}
}

func TestSecrets(t *testing.T) {
	assert.Equal(t, []string{"p w", "tok%2Fen", "tok/en"}, redact.Secrets("redis://u:p w@h/0?token=tok%2Fen&db=1"))
	assert.Empty(t, redact.Secrets("redis://h:6379/0"))
}

func TestText(t *testing.T) {
	tests := []struct{ in, want string }{
		{`Post "https://u:p4ss@proxy.example/v1/chat?key=AIza123": dial tcp: connection refused`,
			`Post "https://u:xxxxx@proxy.example/v1/chat?key=xxxxx": dial tcp: connection refused`},
		{"connect to redis://:pw@10.0.0.1:6379/0 failed, then redis://:pw2@10.0.0.2:6379/0",
			"connect to redis://:xxxxx@10.0.0.1:6379/0 failed, then redis://:xxxxx@10.0.0.2:6379/0"},
		{"sent Authorization: Bearer eyJhbGciOi.J9.x and Basic dXNlcjpwYXNz", "sent Authorization: Bearer xxxxx and Basic xxxxx"},
		{"Basic authentication required; bearer tokens accepted", "Basic authentication required; bearer tokens accepted"},
		{"nothing to hide", "nothing to hide"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			assert.Equal(t, tt.want, redact.Text(tt.in))
		})
	}
}

func TestError(t *testing.T) {
	raw := "redis://user:pa ss@host:bad/0"
	_, parseErr := url.Parse(raw)
	assert.Contains(t, parseErr.Error(), "pa ss", "the parser quotes the URL whole")
	err := redact.Error(fmt.Errorf("REDIS_URL: %w", parseErr), redact.Secrets(raw)...)
	assert.NotContains(t, err.Error(), "pa ss")
	assert.NotContains(t, err.Error(), "ss@")
	var ue *url.Error
	assert.ErrorAs(t, err, &ue, "the original stays reachable")

	plain := fmt.Errorf("open: %w", fs.ErrNotExist)
	assert.Same(t, plain, redact.Error(plain), "an error with nothing to hide is returned as it is")
	assert.ErrorIs(t, redact.Error(fmt.Errorf("GET https://h/?token=abc: %w", fs.ErrNotExist)), fs.ErrNotExist)
	assert.NoError(t, redact.Error(nil))
	assert.Equal(t, "a xxxxx b", redact.Error(errors.New("a s3cr3t b"), "s3cr3t", "").Error())
}

// FuzzSecrets checks, on any URL that net/url parses, that Secrets finds
// the password net/url finds and that URL no longer holds it where the
// userinfo was.
func FuzzSecrets(f *testing.F) {
	for _, seed := range []string{"redis://:pw@h:6379/0", "redis://u:p%40ss@h", "https://u:p:q@h/x?key=1", "redis://u:@h", "x://a:b@c@d/e@f"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil || u.User == nil {
			return
		}
		pass, ok := u.User.Password()
		if !ok || pass == "" {
			return
		}
		assert.Contains(t, redact.Secrets(raw), pass, "Secrets(%q)", raw)
		if r, err := url.Parse(redact.URL(raw)); err == nil && r.User != nil {
			got, _ := r.User.Password()
			assert.Equal(t, redact.Mask, got, "URL(%q) = %q", raw, redact.URL(raw))
		}
	})
}
