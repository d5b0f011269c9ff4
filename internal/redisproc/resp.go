package redisproc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// ReplyError is an error reply of a server, such as "ERR unknown command".
type ReplyError string

// Error returns the reply's text.
func (e ReplyError) Error() string { return string(e) }

// Do sends one command to the server at addr on a connection of its own
// and returns the reply: a string for a simple or bulk string, an int64
// for an integer, []any for an array, nil for a null, or a ReplyError.
// It is for setting up and inspecting servers in tests and benchmarks
// (CLUSTER INFO, SENTINEL commands), not for load.
func Do(addr string, args ...string) (any, error) {
	replies, err := DoAll(addr, args)
	if err != nil {
		return nil, err
	}
	return replies[0], nil
}

// DoAll sends commands, in order, to the server at addr on one connection
// of its own and returns their replies, as Do does, or the first error
// reply. One connection matters to commands that look at what the same
// client did before them: WAIT counts the replicas that acknowledged the
// writes of its own connection, and returns at once on a fresh one.
func DoAll(addr string, cmds ...[]string) ([]any, error) { return doAll(addr, nil, cmds) }

// Do is the package's Do on the server, over TLS for a server started
// with Options.TLS.
func (s *Server) Do(args ...string) (any, error) {
	replies, err := doAll(s.Addr(), s.tls, [][]string{args})
	if err != nil {
		return nil, err
	}
	return replies[0], nil
}

// DoAll is the package's DoAll on the server, over TLS for a server
// started with Options.TLS.
func (s *Server) DoAll(cmds ...[]string) ([]any, error) { return doAll(s.Addr(), s.tls, cmds) }

// DoString is the package's DoString on the server, over TLS for a
// server started with Options.TLS.
func (s *Server) DoString(args ...string) (string, error) {
	return asString(args[0])(s.Do(args...))
}

// dial connects to addr within a second, over TLS with config or plain
// TCP if config is nil.
func dial(addr string, config *tls.Config) (net.Conn, error) {
	if config == nil {
		return net.DialTimeout("tcp", addr, time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	d := tls.Dialer{Config: config}
	return d.DialContext(ctx, "tcp", addr)
}

// doAll is DoAll over TLS with config, or plain TCP if config is nil.
func doAll(addr string, config *tls.Config, cmds [][]string) ([]any, error) {
	conn, err := dial(addr, config)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	for _, args := range cmds {
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, err
	}
	r := bufio.NewReader(conn)
	replies := make([]any, len(cmds))
	for i := range cmds {
		reply, err := readReply(r)
		if err != nil {
			return nil, err
		}
		if re, ok := reply.(ReplyError); ok {
			return nil, re
		}
		replies[i] = reply
	}
	return replies, nil
}

// DoString is Do for a command whose reply is a string.
func DoString(addr string, args ...string) (string, error) {
	return asString(args[0])(Do(addr, args...))
}

// asString returns a function that returns a reply to the command name
// as a string, or an error if it is none.
func asString(name string) func(any, error) (string, error) {
	return func(reply any, err error) (string, error) {
		if err != nil {
			return "", err
		}
		s, ok := reply.(string)
		if !ok {
			return "", fmt.Errorf("%s: reply %v is not a string", name, reply)
		}
		return s, nil
	}
}

// readReply reads one RESP2 reply. An error reply inside an array is kept
// as a ReplyError element.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return ReplyError(body), nil
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected reply line %q", line)
}

// infoField returns the value of field in the text of INFO or CLUSTER
// INFO ("field:value" lines), or "".
func infoField(info, field string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}
