package ssehttp

import (
	"context"
	"net"
)

// LimitSendBuffer returns a function for http.Server.ConnContext that
// sets the kernel's send buffer of each accepted TCP connection to size
// bytes (SO_SNDBUF; a TLS connection's underlying one too). That turns off
// the kernel's automatic growth of the buffer, which on Linux lets each
// connection take up to 4 MiB (net.ipv4.tcp_wmem): an event stream to a
// client that stops reading fills its buffer, its next write waits, and
// after Config.WriteTimeout the stream is dropped. With a limited buffer,
// what such a client makes the server hold is about size bytes (Linux
// doubles the value asked for) rather than megabytes.
//
// 64 KiB suits event streams and JSON answers; a host that also serves
// large downloads over the same server to distant clients needs more.
// Errors setting the buffer are ignored: the connection keeps the kernel's
// default.
func LimitSendBuffer(size int) func(ctx context.Context, c net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		if tc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
			c = tc.NetConn()
		}
		if wb, ok := c.(interface{ SetWriteBuffer(int) error }); ok {
			_ = wb.SetWriteBuffer(size)
		}
		return ctx
	}
}
