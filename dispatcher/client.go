package dispatcher

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpproxy"
)

// The HTTP client is fasthttp's, not net/http's: a postback is one small GET,
// and net/http hands every request to a connection's write goroutine and its
// answer back from a read goroutine, which cost postbackd about a fifth of its
// CPU under load (see the README's Performance section). fasthttp writes the
// request and reads the answer on the caller's goroutine. What that changes,
// and how each difference is kept to the contract:
//
//   - No context cancellation: an attempt that has started runs until its
//     answer or its deadline (the partner's Timeout, or the context's deadline
//     if nearer). A stop therefore waits at most one Timeout longer than the
//     drain, and its outcome is known, not abandoned half way (config checks
//     drain_timeout plus the longest partner timeout against
//     rebalance_timeout). Send checks the context before each attempt and
//     during backoff, as before.
//   - HTTP/1.1 only (trackers all speak it); no HTTP/2 over TLS.
//   - Proxies from HTTP_PROXY, HTTPS_PROXY and NO_PROXY, as net/http's default
//     transport honours them: through fasthttpproxy's dialer (CONNECT), set
//     only when the environment names a proxy.
//   - Redirects are not followed (Do never follows them): a 3xx is the
//     answer.
//   - fasthttp's own retries are off. An attempt makes its request a second
//     time only where net/http would too, and where the tracker cannot have
//     acted on the first: the request could not be written, or a kept-alive
//     connection the tracker had closed while idle answered nothing at all
//     (sendAgain). A fresh connection closed without an answer, a timeout or
//     a reset in the middle of an answer is Send's to count, back off and
//     retry.
const (
	// maxConnsPerHost bounds connections per tracker; beyond it an attempt
	// waits (within its deadline) for one to come free.
	maxConnsPerHost = 512
	// idleConnTimeout closes a kept-alive connection unused for this long.
	idleConnTimeout = 90 * time.Second
	// readBufferSize bounds an answer's status line and headers (fasthttp
	// refuses longer ones); trackers answer with a few hundred bytes.
	readBufferSize = 32 << 10
)

// newClient returns the one client every send reuses; maxAttempt is the
// longest partner timeout.
func newClient(maxAttempt time.Duration) *fasthttp.Client {
	c := &fasthttp.Client{
		// Each request names postbackd/<version> itself.
		NoDefaultUserAgentHeader: true,
		// The rendered URL goes out byte for byte: no path cleaning.
		DisablePathNormalizing: true,
		MaxConnsPerHost:        maxConnsPerHost,
		// With every connection busy, wait for one: the request's own
		// deadline (the smaller of the two) bounds the wait.
		MaxConnWaitTimeout:  24 * time.Hour,
		MaxIdleConnDuration: idleConnTimeout,
		ReadBufferSize:      readBufferSize,
		// The answer is read as a stream so that a long one is judged by its
		// start (maxBody) and its status, like any other, instead of failing
		// as too large; see attempt.
		StreamResponseBody: true,
		// Both IPv4 and IPv6 addresses, as net/http dials; every connection
		// tracked (see sendAgain).
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			return track(fasthttp.DialDualStackTimeout(addr, timeout))
		},
		RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
	}
	var proxyDial func(isTLS bool) (fasthttp.DialFunc, error)
	if proxyFromEnvironment() {
		// A proxy dial cannot take the request's deadline: it is bounded by
		// the longest attempt instead.
		d := &fasthttpproxy.Dialer{DialDualStack: true, Timeout: maxAttempt, ConnectTimeout: maxAttempt}
		proxyDial = func(isTLS bool) (fasthttp.DialFunc, error) { return d.GetDialFuncForTLS(true, isTLS) }
	}
	c.ConfigureClient = func(hc *fasthttp.HostClient) error {
		// A malformed answer's error names the problem, not the bytes
		// around it (which could echo the token); Send redacts as well.
		hc.SecureErrorLogMessage = true
		if proxyDial == nil {
			return nil
		}
		dial, err := proxyDial(hc.IsTLS)
		if err != nil {
			return err
		}
		// DialTimeout, when set, is used before Dial.
		hc.DialTimeout = nil
		hc.Dial = func(addr string) (net.Conn, error) { return track(dial(addr)) }
		return nil
	}
	return c
}

// trackedConn is a connection to a tracker that knows whether it has read
// anything (an answer to an earlier request) and whether a write failed.
// fasthttp reads a connection's RemoteAddr at the start of every request
// (Response.ParseNetConn); the address it gets carries the connection and
// what it had read by then, so that attempt can tell, after a failure, on
// what kind of connection the request went out.
type trackedConn struct {
	net.Conn
	read, writeFailed atomic.Bool
}

// track wraps a dialled connection (the dial's error passed through).
func track(c net.Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c}, nil
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Store(true)
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.writeFailed.Store(true)
	}
	return n, err
}

// RemoteAddr marks the start of a request on c (see trackedConn).
func (c *trackedConn) RemoteAddr() net.Addr {
	return requestAddr{Addr: c.Conn.RemoteAddr(), conn: c, reused: c.read.Load()}
}

// requestAddr is a tracker's address as one request saw its connection.
type requestAddr struct {
	net.Addr
	conn   *trackedConn
	reused bool // the connection had answered an earlier request
}

// sendAgain says whether a failed request may be made again at once, as one
// attempt: the tracker cannot have acted on it. Either it was not written
// (a write failed: a connection the tracker had already reset), or it went
// out on a kept-alive connection that then closed without a byte of answer,
// which is what a tracker closing an idle connection looks like, and the
// one case net/http retries a GET by itself. A fresh connection closed
// without an answer is not: the tracker may have acted and then failed.
func sendAgain(resp *fasthttp.Response, err error) bool {
	ra, ok := resp.RemoteAddr().(requestAddr)
	if !ok {
		return false // no connection: the dial failed
	}
	if ra.conn.writeFailed.Load() {
		return true
	}
	return ra.reused && errors.Is(err, fasthttp.ErrConnectionClosed)
}

// proxyFromEnvironment: the environment names a proxy (the variables
// net/http's ProxyFromEnvironment reads).
func proxyFromEnvironment() bool {
	for _, v := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"} {
		if os.Getenv(v) != "" {
			return true
		}
	}
	return false
}

// isTimeout: the attempt ran out of time (dialing, waiting for a connection,
// writing or reading).
func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
