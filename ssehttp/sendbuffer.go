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
// It also hands the connection to the Handler, which bounds how long the
// data of an event stream may stay unacknowledged by the client to
// Config.WriteTimeout (TCP_USER_TIMEOUT, on Linux). A client that
// vanished without closing its connection (a laptop shut, a phone out of
// coverage: no FIN or reset reaches the server) acknowledges nothing, but
// a quiet stream's heartbeats fit in the send buffer, so no write waits:
// without that bound its stream, and its place under
// Config.MaxStreamsPerCaller, were held until the kernel gave the
// connection up, about 15 minutes with Linux's defaults
// (net.ipv4.tcp_retries2).
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
		return context.WithValue(ctx, connKey{}, c)
	}
}

// connKey is the context key under which LimitSendBuffer leaves the
// connection of a request, for boundUnacked.
type connKey struct{}

// boundUnacked bounds how long the data written to the connection of r
// may stay unacknowledged to Config.WriteTimeout, when LimitSendBuffer
// left the connection in r's context and the system can (see
// setUserTimeout); otherwise it does nothing.
func (h *Handler) boundUnacked(ctx context.Context) {
	c, ok := ctx.Value(connKey{}).(net.Conn)
	if !ok {
		return
	}
	if err := setUserTimeout(c, h.cfg.WriteTimeout); err != nil {
		h.cfg.Logger.DebugContext(ctx, "flows: cannot bound unacknowledged data on a stream's connection", "err", err)
	}
}
