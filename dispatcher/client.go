package dispatcher

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpproxy"
	"golang.org/x/net/http/httpproxy"

	"github.com/postbackd/postbackd/config"
)

// The HTTP client is fasthttp's, not net/http's: a postback is one small GET,
// and net/http hands every request to a connection's write goroutine and its
// answer back from a read goroutine. fasthttp writes the request and reads
// the answer on the caller's goroutine: postbackd's CPU per postback fell by
// about a third with it (docs/performance.md, The HTTP client). What that changes,
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
//     transport honours them, through fasthttpproxy's dialer, set only when
//     the environment names a proxy. It tunnels every request with CONNECT,
//     http:// ones too (net/http sent those to the proxy as absolute-URI
//     GETs): the proxy must allow CONNECT to the trackers' ports. It speaks
//     http:// and socks5:// to the proxy, not https://; New reads the
//     variables itself, refuses a proxy the dialer cannot use and gives it
//     the rest written out in full (proxyFromEnvironment).
//   - Redirects are not followed (Do never follows them): a 3xx is the
//     answer.
//   - fasthttp's own retries are off. An attempt makes its request a second
//     time only where net/http would too: the request could not be written,
//     or a kept-alive connection answered nothing at all (sendAgain). A
//     fresh connection closed without an answer, a timeout or a reset in the
//     middle of an answer is Send's to count, back off and retry.
//   - Stricter parsing: an answer net/http tolerated with bare LF line ends,
//     repeated Content-Length headers or more than 32 KiB of headers is a
//     failed attempt (retried, as a garbled answer always was). No
//     Accept-Encoding is sent, so a tracker answers uncompressed.
//   - Dialing: fasthttp caches a host's addresses for a minute and tries
//     them in turn (no Happy Eyeballs race between IPv6 and IPv4).
const (
	// maxConnsPerHost bounds connections per tracker; beyond it an attempt
	// waits (within its deadline) for one to come free.
	maxConnsPerHost = 512
	// idleConnTimeout closes a kept-alive connection unused for this long:
	// under the idle timeouts trackers' front ends commonly use (60s on a
	// cloud load balancer, 75s in nginx), so that few pooled connections
	// are found closed (see sendAgain for those that are).
	idleConnTimeout = 50 * time.Second
	// readBufferSize bounds an answer's status line and headers (fasthttp
	// refuses longer ones; net/http's default took up to 10 MiB); trackers
	// answer with a few hundred bytes.
	readBufferSize = 32 << 10
)

// rootCAs, when set, replaces the system's roots (tests trust their own
// tracker's certificate with it); nil in production.
var rootCAs *x509.CertPool

// newClient returns the one client every send reuses. longestTimeout (the
// longest partner timeout, at least the default one) bounds a dial fasthttp
// starts without a request's deadline, for a request waiting for a free
// connection.
func newClient(longestTimeout time.Duration, proxy *httpproxy.Config) *fasthttp.Client {
	dialTimeoutOrLongest := func(timeout time.Duration) time.Duration {
		if timeout <= 0 {
			return longestTimeout
		}
		return timeout
	}
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
		// The most recently used connection first, as net/http does: the
		// least likely to have been closed by the tracker meanwhile.
		ConnPoolStrategy: fasthttp.LIFO,
		ReadBufferSize:   readBufferSize,
		// The answer is read as a stream so that a long one is judged by its
		// start (maxBody) and its status, like any other, instead of failing
		// as too large; see attempt.
		StreamResponseBody: true,
		// Both IPv4 and IPv6 addresses, as net/http dials; every connection
		// tracked (see sendAgain).
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			deadline := time.Now().Add(dialTimeoutOrLongest(timeout))
			c, err := fasthttp.DialDualStackTimeout(addr, time.Until(deadline))
			return track(c, err, deadline)
		},
		RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
	}
	if rootCAs != nil {
		c.TLSConfig = &tls.Config{RootCAs: rootCAs}
	}
	c.ConfigureClient = func(hc *fasthttp.HostClient) error {
		// A malformed answer's error names the problem, not all the bytes
		// around it; Send redacts the token from every error as well.
		hc.SecureErrorLogMessage = true
		if proxy == nil {
			return nil
		}
		isTLS := hc.IsTLS
		hc.DialTimeout = func(addr string, timeout time.Duration) (net.Conn, error) {
			// The TCP dial and the CONNECT exchange share the attempt's time.
			timeout = dialTimeoutOrLongest(timeout)
			deadline := time.Now().Add(timeout)
			d := &fasthttpproxy.Dialer{Config: *proxy, DialDualStack: true, Timeout: timeout / 2, ConnectTimeout: timeout / 2}
			dial, err := d.GetDialFuncForTLS(false, isTLS)
			if err != nil {
				return nil, err
			}
			c, err := dial(addr)
			return track(c, err, deadline)
		}
		return nil
	}
	return c
}

// trackedConn is a connection to a tracker that knows whether it has read
// anything (an answer to an earlier request) and the error of a write that
// failed. fasthttp reads a connection's RemoteAddr at the start of every
// request (Response.ParseNetConn); the address it gets carries the
// connection and what it had read by then, so that attempt can tell, after
// a failure, on what kind of connection the request went out. A TLS
// connection's handshake is made by the first request's write (fasthttp
// sets no WriteTimeout, which would make it at dial), so a fresh connection
// has read nothing when its first request starts.
type trackedConn struct {
	net.Conn
	read     atomic.Bool
	writeErr atomic.Pointer[error] // the first failed write's error
}

// track wraps a dialled connection (the dial's error passed through) and
// sets its first deadline, the attempt's, taken before the dial: it bounds a
// TLS handshake's reads, which fasthttp's own deadlines (set around its
// write and its read of the answer) do not cover.
func track(c net.Conn, err error, deadline time.Time) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	if err := c.SetDeadline(deadline); err != nil {
		_ = c.Close()
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
		c.writeErr.CompareAndSwap(nil, &err)
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

// sendAgain says whether a failed request is made again at once, as part of
// the same attempt (uncounted, not backed off), in the two cases net/http
// resends a GET by itself:
//
//   - the request itself could not be written (err is the failed write's
//     error, not that of a later write such as a TLS close alert): the
//     tracker has at most part of it, and cannot have acted on it;
//   - it went out on a kept-alive connection that then closed without a
//     byte of answer, which is what a tracker closing an idle connection
//     looks like. It is also what a tracker that acted on the request and
//     then crashed looks like: that resend is in the duplicate window of an
//     answer that never came (README, Delivery semantics).
//
// A fresh connection closed without an answer is neither: Send counts it
// as a failed attempt, backs off and retries.
func sendAgain(resp *fasthttp.Response, err error) bool {
	ra, ok := resp.RemoteAddr().(requestAddr)
	if !ok {
		return false // no connection: the dial failed
	}
	if we := ra.conn.writeErr.Load(); we != nil && errors.Is(err, *we) {
		return true
	}
	return ra.reused && errors.Is(err, fasthttp.ErrConnectionClosed)
}

// CheckProxyEnvironment checks the proxy variables (read with getenv) that
// postbacks to partners would go through, as New does; see
// proxyFromEnvironment.
func CheckProxyEnvironment(getenv func(string) string, partners map[string]config.Partner) error {
	_, err := proxyFromEnvironment(getenv, urlSchemes(partners))
	return err
}

// urlSchemes are the schemes of the partners' URL templates ("http",
// "https").
func urlSchemes(partners map[string]config.Partner) map[string]bool {
	out := map[string]bool{}
	for _, p := range partners {
		for _, g := range p.Goals {
			scheme, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(g.URL)), "://")
			out[scheme] = true
		}
	}
	return out
}

// proxyFromEnvironment is the proxy configuration the dialer is given, nil
// when postbacks go out directly: the environment as Go's net/http reads it
// (httpproxy.FromEnvironment: of http_proxy and HTTP_PROXY the first that
// is set, likewise https_proxy and HTTPS_PROXY, no_proxy and NO_PROXY,
// REQUEST_METHOD for CGI), with each proxy that postbacks of schemes would
// go through checked and written out in full (scheme, host and port; see
// normalizeProxy). Left to fasthttpproxy, a value httpproxy cannot parse is
// ignored (postbacks then go out directly, around the proxy), and others
// fail every send with an error that holds the whole value, password
// included, into audit records, dead letters and logs. A variable no
// postback would go through (HTTPS_PROXY with only http:// partners, any
// with NO_PROXY=*) is neither checked nor used. Each error names the
// variable and what is wrong, never its value: it may hold a password.
func proxyFromEnvironment(getenv func(string) string, schemes map[string]bool) (*httpproxy.Config, error) {
	firstSet := func(names ...string) (name, value string) {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return n, v
			}
		}
		return "", ""
	}
	_, noProxy := firstSet("no_proxy", "NO_PROXY")
	for _, p := range strings.Split(noProxy, ",") {
		if strings.TrimSpace(p) == "*" {
			return nil, nil // every host is excepted
		}
	}
	cfg := &httpproxy.Config{NoProxy: noProxy, CGI: getenv("REQUEST_METHOD") != ""}
	var errs []error
	for _, v := range []struct {
		scheme string
		names  [2]string
		proxy  *string
	}{
		{"http", [2]string{"http_proxy", "HTTP_PROXY"}, &cfg.HTTPProxy},
		{"https", [2]string{"https_proxy", "HTTPS_PROXY"}, &cfg.HTTPSProxy},
	} {
		name, value := firstSet(v.names[0], v.names[1])
		if value == "" || !schemes[v.scheme] {
			continue
		}
		if v.scheme == "http" && cfg.CGI {
			// httpproxy refuses HTTP_PROXY there (a CGI request's Proxy
			// header sets it): every http:// postback would fail.
			errs = append(errs, fmt.Errorf("environment variable %s is set while REQUEST_METHOD is: "+
				"Go's proxy rules refuse it in a CGI environment, so every http:// postback would fail; unset one of them", name))
			continue
		}
		normal, problem := normalizeProxy(value)
		if problem != "" {
			errs = append(errs, fmt.Errorf("environment variable %s: %s (its value is not shown: it may hold credentials); "+
				"a proxy is named as http://host:port or socks5://host:port, with user:password@ before the host if it needs them",
				name, problem))
			continue
		}
		*v.proxy = normal
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.HTTPProxy == "" && cfg.HTTPSProxy == "" {
		return nil, nil
	}
	return cfg, nil
}

// normalizeProxy is v as the proxy URL the dialer can use, or what keeps it
// from being one. Like httpproxy, a value that does not parse as a URL with
// a host is read as http://v. The URL keeps its scheme and user:password
// and gets the scheme's port if it names none (80 for http, as net/http
// dials; 1080 for socks5); a path, query or fragment, which net/http
// ignores and fasthttpproxy would dial as part of the port, is dropped.
func normalizeProxy(v string) (normal, problem string) {
	u, err := url.Parse(v)
	if err != nil || u.Scheme == "" || u.Host == "" {
		u2, err2 := url.Parse("http://" + v)
		switch {
		case err2 == nil && u2.Host != "" && (u2.Path == "" || u2.Path == "/"):
			u, err = u2, nil
		case err == nil:
			err = err2
		}
	}
	var escape url.EscapeError
	var host url.InvalidHostError
	var ue *url.Error
	switch {
	case errors.As(err, &escape):
		return "", "not a URL: an invalid %-escape"
	case errors.As(err, &host):
		return "", "not a URL: a character a host name cannot hold"
	case errors.As(err, &ue) && strings.HasPrefix(ue.Err.Error(), "invalid port"):
		return "", "not a URL: a port that is not a number"
	case err != nil:
		return "", "not a URL"
	}
	port := "80"
	switch u.Scheme {
	case "http":
	case "socks5", "socks5h":
		port = "1080"
	default: // fasthttpproxy speaks no TLS to a proxy
		return "", fmt.Sprintf("the scheme %q, which the proxy dialer does not speak (http, socks5 or socks5h)", u.Scheme)
	}
	if u.Hostname() == "" {
		return "", "no host"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", "a port that is not a number from 1 to 65535"
		}
		port = p
	}
	out := url.URL{Scheme: u.Scheme, User: u.User, Host: net.JoinHostPort(u.Hostname(), port)}
	return out.String(), ""
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
