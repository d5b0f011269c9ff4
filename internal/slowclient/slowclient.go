// Package slowclient plays abusive HTTP clients against a server under
// test: clients that send a request body one byte at a time, as a
// slowloris attack does.
package slowclient

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Result is what one trickling client saw.
type Result struct {
	// Sent is how many bytes of the body it had sent when the server
	// closed the connection.
	Sent int
	// Status is the status line the server answered ("" for none).
	Status string
	// Err is set when the client could not connect or write the head,
	// or when the server had not closed the connection within the
	// client's wait. A connection the server closed, with a FIN or with a
	// reset (it had unread bytes of the body), has none.
	Err error
}

// Trickle opens a connection to addr and sends head (a request line and
// headers, each ending with "\r\n", without Content-Length), a
// Content-Length of bodyLen and the blank line; then one byte of the body
// every gap, until the body is sent or a write fails. Meanwhile it reads
// the server's answer and waits for the server to close the connection,
// for at most wait. The Result arrives on the returned channel once the
// connection is closed.
func Trickle(addr, head string, bodyLen int, gap, wait time.Duration) <-chan Result {
	out := make(chan Result, 1)
	go func() {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			out <- Result{Err: err}
			return
		}
		defer conn.Close()
		if _, err := fmt.Fprintf(conn, "%sContent-Length: %d\r\n\r\n", head, bodyLen); err != nil {
			out <- Result{Err: err}
			return
		}
		var (
			mu   sync.Mutex
			sent int
			done = make(chan struct{})
		)
		go func() { // the sender: stops at the first failed write
			defer close(done)
			for range bodyLen {
				if _, err := conn.Write([]byte("x")); err != nil {
					return
				}
				mu.Lock()
				sent++
				mu.Unlock()
				time.Sleep(gap)
			}
		}()
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		r := bufio.NewReader(conn)
		status, _ := r.ReadString('\n')
		_, err = io.Copy(io.Discard, r) // until the server closes, or wait passes
		if errors.Is(err, syscall.ECONNRESET) {
			err = nil // closed by the server, with the body's bytes unread
		}
		mu.Lock()
		res := Result{Sent: sent, Status: strings.TrimSpace(status), Err: err}
		mu.Unlock()
		conn.Close() // ends the sender's next write
		<-done
		out <- res
	}()
	return out
}

// Flood runs n Trickle clients at once and returns their results.
func Flood(n int, addr, head string, bodyLen int, gap, wait time.Duration) []Result {
	chans := make([]<-chan Result, n)
	for i := range chans {
		chans[i] = Trickle(addr, head, bodyLen, gap, wait)
	}
	out := make([]Result, n)
	for i, ch := range chans {
		out[i] = <-ch
	}
	return out
}
