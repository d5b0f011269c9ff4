package smtp_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/notify/smtp"
)

// scriptedServer is an SMTP server written by hand, for conversations
// that a real server library will not hold: it accepts every message and
// then, once it has answered 250 to the message's end, behaves as after
// says.
type scriptedServer struct {
	addr  string
	after string // "drop": close the connection; "RSET" or "QUIT": answer that command 554

	mu       sync.Mutex
	accepted int
}

func startScriptedServer(t *testing.T, after string) *scriptedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	s := &scriptedServer{addr: ln.Addr().String(), after: after}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *scriptedServer) serve(c net.Conn) {
	defer func() { _ = c.Close() }()
	r := bufio.NewReader(c)
	say := func(line string) { _, _ = c.Write([]byte(line + "\r\n")) }
	say("220 scripted ESMTP")
	accepted := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.TrimSpace(strings.SplitN(line, " ", 2)[0]))
		switch {
		case accepted && verb == s.after:
			say("554 5.0.0 not now")
		case verb == "EHLO":
			say("250-scripted\r\n250 8BITMIME")
		case verb == "DATA":
			say("354 go on")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			s.mu.Lock()
			s.accepted++
			s.mu.Unlock()
			say("250 2.0.0 queued")
			accepted = true
			if s.after == "drop" {
				return
			}
		case verb == "QUIT":
			say("221 bye")
			return
		default:
			say("250 ok")
		}
	}
}

func (s *scriptedServer) messages() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// TestAcceptedIsSent: once the server has answered 250 to a message, the
// message is sent, whatever goes wrong in the rest of the conversation
// (the connection drops, RSET or QUIT is refused). An error then would
// have the notification retried, a copy more each time the server takes
// it, and a 5xx would dead-letter a message that arrived.
func TestAcceptedIsSent(t *testing.T) {
	for _, after := range []string{"drop", "RSET", "QUIT"} {
		t.Run(after, func(t *testing.T) {
			ms := startScriptedServer(t, after)
			s := newSender(t, smtp.Config{URL: "smtp://" + ms.addr})
			require.NoError(t, s.Deliver(context.Background(), sample()))
			assert.Equal(t, 1, ms.messages())
			require.NoError(t, s.Send(context.Background(), smtp.Message{Subject: "s", Text: "t", ID: "step-1"}))
			assert.Equal(t, 2, ms.messages())
		})
	}
}
