package dispatcher

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http/httpproxy"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/postback"
)

// The HTTP client's behaviour against a real net/http tracker: what
// client.go says fasthttp is configured to do.

// A tracker that closed a kept-alive connection while it was idle costs no
// attempt: the request goes out again on a new connection, once, as net/http
// does.
func TestSendIdleConnectionClosedByTracker(t *testing.T) {
	var hits counter
	closed := make(chan struct{}, 8)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.hit(r) }))
	srv.Config.IdleTimeout = 20 * time.Millisecond
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	defer srv.Close()
	env := newEnv(t, map[string]config.Partner{"acme": serverPartner(srv)})

	for i := range 3 {
		res := env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD))
		if !res.Delivered || res.Attempts != 1 {
			t.Fatalf("send %d: Delivered %v Attempts %d err %v; want delivered by one attempt", i+1, res.Delivered, res.Attempts, res.Err)
		}
		if hits.count() != i+1 {
			t.Fatalf("send %d: tracker saw %d requests, want %d", i+1, hits.count(), i+1)
		}
		// The tracker closes the connection the send left idle.
		waitFor(t, closed, 5*time.Second, "the tracker to close the idle connection")
	}
}

// A tracker that reads a request on a fresh connection and closes it without
// a byte of answer may have acted on it: that is a failed attempt, counted,
// backed off and retried by Send, never repeated silently by the client.
func TestSendFreshConnectionClosedIsAnAttempt(t *testing.T) {
	var hits counter
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.hit(r) == 1 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		}
	}))
	defer srv.Close()
	env := newEnv(t, map[string]config.Partner{"acme": serverPartner(srv)})
	res := env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD))
	if !res.Delivered || res.Attempts != 2 || hits.count() != 2 {
		t.Errorf("Delivered %v Attempts %d err %v, tracker saw %d; want delivered by the 2nd attempt of 2",
			res.Delivered, res.Attempts, res.Err, hits.count())
	}
}

// A long answer is judged by its status and its start, like a short one: a
// success with a megabyte of body is delivered (not an error retried into a
// double payout), and the connection serves the next send.
func TestSendLongAnswer(t *testing.T) {
	long := "OK " + strings.Repeat("x", 1<<20)
	for _, tc := range []struct {
		name    string
		chunked bool
	}{{"content-length", false}, {"chunked", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var hits counter
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.hit(r)
				if tc.chunked {
					_, _ = io.WriteString(w, long[:10])
					w.(http.Flusher).Flush()
					_, _ = io.WriteString(w, long[10:])
					return
				}
				w.Header().Set("Content-Length", "1048579")
				_, _ = io.WriteString(w, long)
			}))
			defer srv.Close()
			pc := serverPartner(srv)
			pc.Success.BodyPattern = "^OK"
			env := newEnv(t, map[string]config.Partner{"acme": pc})
			sendDeliveredOnce(t, env.d, 2)
			if hits.count() != 2 {
				t.Errorf("tracker saw %d requests, want 2", hits.count())
			}
		})
	}
}

// An answer without a length, ended by closing the connection (HTTP/1.0
// style), is read to its end and judged.
func TestSendAnswerEndedByClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nOK accepted")
			}()
		}
	}()
	srv := &httptest.Server{URL: "http://" + ln.Addr().String()}
	pc := serverPartner(srv)
	pc.Success.BodyPattern = "^OK accepted$"
	env := newEnv(t, map[string]config.Partner{"acme": pc})
	sendDeliveredOnce(t, env.d, 2)
}

// Answers with large headers (cookies, tracing) up to readBufferSize are
// read; fasthttp's default buffer (4 KiB) would refuse them.
func TestSendLargeAnswerHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 4 {
			w.Header().Add("Set-Cookie", "c"+string(rune('0'+i))+"="+strings.Repeat("v", 4000))
		}
	}))
	defer srv.Close()
	env := newEnv(t, map[string]config.Partner{"acme": serverPartner(srv)})
	if res := env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD)); !res.Delivered {
		t.Fatalf("16 KB of headers: %v", res.Err)
	}
}

// connectProxy is a CONNECT proxy in front of the tracker listening on
// port of 127.0.0.1: it alone resolves tracker.test, so a request that
// bypassed it could not reach the tracker at all. tunnels lists the
// CONNECT targets it was asked for.
func connectProxy(t *testing.T, port string) (addr string, tunnels func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		mu.Lock()
		seen = append(seen, r.Host)
		mu.Unlock()
		up, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			_ = up.Close()
			return
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() { _, _ = io.Copy(up, conn); _ = up.Close() }()
		_, _ = io.Copy(conn, up)
		_ = conn.Close()
	}))
	t.Cleanup(proxy.Close)
	return strings.TrimPrefix(proxy.URL, "http://"), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// clearProxyEnvironment unsets, for the test, every variable the proxy
// rules read, so that the machine's own do not decide the test.
func clearProxyEnvironment(t *testing.T) {
	for _, v := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "REQUEST_METHOD"} {
		t.Setenv(v, "")
	}
}

// HTTP_PROXY is honoured, as net/http's default transport honours it, in
// each way a proxy is commonly written: the request reaches the tracker
// through the proxy's CONNECT tunnel.
func TestSendThroughProxyFromEnvironment(t *testing.T) {
	var hits counter
	tracker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.hit(r) }))
	defer tracker.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(tracker.URL, "http://"))
	proxy, tunnels := connectProxy(t, port)
	pc := serverPartner(&httptest.Server{URL: "http://tracker.test:" + port})
	for i, value := range []string{
		"http://" + proxy,
		proxy, // no scheme: http, as net/http reads it
		"http://user:s3cret@" + proxy + "/",
		"http://" + proxy + "/some/path?q=1#f", // net/http ignores all three
	} {
		clearProxyEnvironment(t)
		t.Setenv("HTTP_PROXY", value)
		env := newEnv(t, map[string]config.Partner{"acme": pc})
		res := env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD))
		if !res.Delivered || hits.count() != i+1 {
			t.Fatalf("HTTP_PROXY=%s: Delivered %v err %v, tracker saw %d; want delivered through the proxy", value, res.Delivered, res.Err, hits.count())
		}
		if got := tunnels(); len(got) != i+1 || got[i] != "tracker.test:"+port {
			t.Errorf("HTTP_PROXY=%s: proxy tunnels %q; want one more to tracker.test:%s", value, got, port)
		}
	}
}

// A proxy variable that names no proxy the dialer can use fails New, naming
// the variable and never its value: unchecked, httpproxy ignored some such
// values (postbacks went out around the proxy) and passed others on to the
// dialer, whose error, in every failed attempt, held the whole value with
// its password.
func TestProxyEnvironmentChecked(t *testing.T) {
	const secret = "s3cret"
	partners := map[string]config.Partner{
		"plain":  serverPartner(&httptest.Server{URL: "http://127.0.0.1:9"}),
		"secure": serverPartner(&httptest.Server{URL: "https://127.0.0.1:9"}),
	}
	for _, tc := range []struct{ name, value, problem string }{
		{"HTTP_PROXY", "http://user:" + secret + "@bad host:3128", "a character a host name cannot hold"},
		{"HTTP_PROXY", "http://user:" + secret + "@proxy:abc", "a port that is not a number"},
		{"http_proxy", "proxy:abc", "a port that is not a number"},
		{"HTTP_PROXY", "http://user:" + secret + "@proxy:99999", "a port that is not a number from 1 to 65535"},
		{"HTTPS_PROXY", "http://user:" + secret + "%zz@proxy:3128", "an invalid %-escape"},
		{"https_proxy", "ftp://user:" + secret + "@proxy:21", `the scheme "ftp"`},
		{"HTTPS_PROXY", "https://user:" + secret + "@proxy:443", `the scheme "https"`},
		{"http_proxy", "socks5://", "no host"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			clearProxyEnvironment(t)
			t.Setenv(tc.name, tc.value)
			_, err := New(partners, Options{})
			if err == nil {
				t.Fatal("New accepted it")
			}
			msg := err.Error()
			if !strings.Contains(msg, "environment variable "+tc.name+": ") || !strings.Contains(msg, tc.problem) {
				t.Errorf("error %q; want it to name %s and say %q", msg, tc.name, tc.problem)
			}
			if strings.Contains(msg, secret) || strings.Contains(msg, "@proxy") || strings.Contains(msg, "bad host") {
				t.Errorf("error %q shows the value", msg)
			}
		})
	}

	refused := func(t *testing.T, what string, ps map[string]config.Partner, want string) {
		t.Helper()
		_, err := New(ps, Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: New: %v; want an error saying %q", what, err, want)
		}
	}
	accepted := func(t *testing.T, what string, ps map[string]config.Partner) {
		t.Helper()
		if _, err := New(ps, Options{}); err != nil {
			t.Errorf("%s: New: %v; want it accepted", what, err)
		}
	}
	// Of two spellings, the one Go's proxy rules read (lower case first) is
	// checked and named.
	clearProxyEnvironment(t)
	t.Setenv("http_proxy", "http://proxy.internal:3128")
	t.Setenv("HTTP_PROXY", "http://bad host")
	accepted(t, "HTTP_PROXY malformed, http_proxy in effect", partners)
	t.Setenv("http_proxy", "http://bad host")
	t.Setenv("HTTP_PROXY", "http://proxy.internal:3128")
	refused(t, "http_proxy malformed and in effect", partners, "environment variable http_proxy: ")
	// A variable no postback goes through is not checked.
	clearProxyEnvironment(t)
	t.Setenv("HTTPS_PROXY", "https://proxy.internal:443")
	accepted(t, "HTTPS_PROXY unusable, no https:// partner", map[string]config.Partner{"plain": partners["plain"]})
	refused(t, "HTTPS_PROXY unusable, an https:// partner", partners, "environment variable HTTPS_PROXY: ")
	t.Setenv("NO_PROXY", "example.com, *")
	accepted(t, "HTTPS_PROXY unusable, NO_PROXY=*", partners)
	// In a CGI environment Go's proxy rules refuse HTTP_PROXY: every http://
	// postback would fail.
	clearProxyEnvironment(t)
	t.Setenv("HTTP_PROXY", "http://proxy.internal:3128")
	t.Setenv("REQUEST_METHOD", "GET")
	refused(t, "HTTP_PROXY in a CGI environment", partners, "environment variable HTTP_PROXY is set while REQUEST_METHOD is")
}

// normalizeProxy writes every accepted value out as the proxy net/http
// would dial, and httpproxy, which the dialer reads it with, uses it.
func TestNormalizeProxy(t *testing.T) {
	for in, want := range map[string]string{
		"proxy:3128":                         "http://proxy:3128",
		"http://user:pa%20ss@proxy":          "http://user:pa%20ss@proxy:80",
		"http://proxy:3128/":                 "http://proxy:3128",
		"http://proxy:3128/p?q=1#f":          "http://proxy:3128",
		"socks5h://proxy":                    "socks5h://proxy:1080",
		"socks5://u:p@10.0.0.1:1081":         "socks5://u:p@10.0.0.1:1081",
		"http://[::1]:3128/":                 "http://[::1]:3128",
		"localhost":                          "http://localhost:80",
		"http://proxy.internal.example:8080": "http://proxy.internal.example:8080",
	} {
		got, problem := normalizeProxy(in)
		if problem != "" || got != want {
			t.Errorf("normalizeProxy(%q) = %q, %q; want %q", in, got, problem, want)
			continue
		}
		cfg := httpproxy.Config{HTTPProxy: got}
		used, err := cfg.ProxyFunc()(&url.URL{Scheme: "http", Host: "tracker.test:8080"})
		if err != nil || used == nil || used.String() != got {
			t.Errorf("httpproxy given %q uses %v, %v; want it", got, used, err)
		}
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	return addr
}

// A proxy that cannot be reached fails the attempt with an error that names
// the proxy's address and holds neither its password nor the postback's
// token.
func TestSendUnreachableProxyHidesCredentials(t *testing.T) {
	proxy := closedAddr(t)
	clearProxyEnvironment(t)
	t.Setenv("HTTP_PROXY", "http://user:s3cret@"+proxy)
	env := newEnv(t, map[string]config.Partner{"acme": serverPartner(&httptest.Server{URL: "http://tracker.test:8080"})})
	res := env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD))
	if res.Delivered || res.Err == nil {
		t.Fatalf("Delivered %v err %v; want a failed attempt", res.Delivered, res.Err)
	}
	msg := res.Err.Error()
	if !strings.Contains(msg, proxy) {
		t.Errorf("error %q does not name the proxy %s: the attempt did not go through it", msg, proxy)
	}
	if strings.Contains(msg, "s3cret") || strings.Contains(msg, testToken) {
		t.Errorf("error %q shows a secret", msg)
	}
}

// A tracker that cannot be reached is a failed attempt with the dial's
// error, never the URL (which holds the token).
func TestSendUnreachableTracker(t *testing.T) {
	pc := serverPartner(&httptest.Server{URL: "http://" + closedAddr(t)})
	env := newEnv(t, map[string]config.Partner{"acme": pc})
	res := env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD))
	if res.Delivered || res.Permanent || res.Attempts != 3 || res.Err == nil {
		t.Fatalf("got Delivered %v Permanent %v Attempts %d err %v; want 3 failed attempts", res.Delivered, res.Permanent, res.Attempts, res.Err)
	}
	if strings.Contains(res.Err.Error(), testToken) || strings.Contains(res.Err.Error(), url.QueryEscape(testToken)) {
		t.Errorf("error leaks the token: %v", res.Err)
	}
	var ne net.Error
	if isTimeout(res.Err) || errors.As(res.Err, &ne) && ne.Timeout() {
		t.Errorf("a refused connection reported as a timeout: %v", res.Err)
	}
}

// trustTracker makes the clients of Dispatchers created during the test
// trust srv's certificate.
func trustTracker(t *testing.T, srv *httptest.Server) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	rootCAs = pool
	t.Cleanup(func() { rootCAs = nil })
}

// tlsListener serves TLS with srv's certificate on a listener of its own,
// handing each accepted connection (before the handshake) to serve.
func tlsListener(t *testing.T, srv *httptest.Server, serve func(raw *net.TCPConn, c *tls.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	cfg := &tls.Config{Certificates: srv.TLS.Certificates}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c.(*net.TCPConn), tls.Server(c, cfg))
		}
	}()
	return "https://" + ln.Addr().String()
}

// Over TLS, sends are delivered and the connection is kept alive.
func TestSendTLS(t *testing.T) {
	var hits counter
	conns := make(chan struct{}, 8)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.hit(r) }))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns <- struct{}{}
		}
	}
	srv.StartTLS()
	defer srv.Close()
	trustTracker(t, srv)
	env := newEnv(t, map[string]config.Partner{"acme": serverPartner(srv)})
	sendDeliveredOnce(t, env.d, 3)
	if hits.count() != 3 || len(conns) != 1 {
		t.Errorf("tracker saw %d requests on %d connections; want 3 on 1", hits.count(), len(conns))
	}
}

// A TLS tracker that reads a request and resets the connection, without an
// answer or after part of one, may have acted on it: each is one failed
// attempt, the request never repeated within it (closing a TLS connection
// writes an alert, and that write failing must not count as the request's).
func TestSendTLSResetAfterRequest(t *testing.T) {
	for _, partial := range []string{"", "HTTP/1.1 200 OK\r\nContent-Le"} {
		t.Run(fmt.Sprintf("answer %q", partial), func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			defer srv.Close()
			trustTracker(t, srv)
			var mu sync.Mutex
			requests := 0
			base := tlsListener(t, srv, func(raw *net.TCPConn, c *tls.Conn) {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				mu.Lock()
				requests++
				mu.Unlock()
				if partial != "" {
					_, _ = io.WriteString(c, partial)
				}
				_ = raw.SetLinger(0) // close with a reset
				_ = raw.Close()
			})
			pc := serverPartner(&httptest.Server{URL: base})
			env := newEnv(t, map[string]config.Partner{"acme": pc})
			res := env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD))
			mu.Lock()
			defer mu.Unlock()
			if res.Delivered || res.Attempts != 3 || requests != 3 {
				t.Errorf("Delivered %v Attempts %d err %v, tracker read %d requests; want 3 failed attempts, one request each",
					res.Delivered, res.Attempts, res.Err, requests)
			}
		})
	}
}

// A TLS tracker that accepts the connection and never answers the
// handshake: each attempt ends at its timeout.
func TestSendTLSHandshakeStalls(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	trustTracker(t, srv)
	release := make(chan struct{})
	defer close(release)
	base := tlsListener(t, srv, func(raw *net.TCPConn, _ *tls.Conn) {
		<-release // no handshake, no answer
		_ = raw.Close()
	})
	pc := serverPartner(&httptest.Server{URL: base})
	pc.Timeout = 200 * time.Millisecond
	env := newEnv(t, map[string]config.Partner{"acme": pc})
	done := make(chan Result, 1)
	go func() { done <- env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD)) }()
	res := waitFor(t, done, 10*time.Second, "Send against a tracker that never completes a TLS handshake")
	if res.Delivered || res.Attempts != 3 || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Errorf("Delivered %v Attempts %d err %v; want 3 attempts ending at their timeout", res.Delivered, res.Attempts, res.Err)
	}
}

// With every connection to a tracker busy, a send waits for one; when the
// busy ones close (the tracker answers "Connection: close"), the waiting
// sends get new connections, each within its own deadline, and are
// delivered by their first attempt.
func TestSendWaitsForAConnection(t *testing.T) {
	const sends = maxConnsPerHost + 88
	// Both ends of every connection are in this process.
	if rl := (syscall.Rlimit{}); syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < 2*sends+100 {
		t.Skipf("needs about %d open files, the limit is %d", 2*sends+100, rl.Cur)
	}
	var hits counter
	full := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.hit(r) >= maxConnsPerHost {
			once.Do(func() { close(full) })
		}
		<-full // every connection busy until all are
		w.Header().Set("Connection", "close")
	}))
	defer srv.Close()
	pc := serverPartner(srv)
	pc.Timeout = 30 * time.Second // room for 512 dials under the race detector
	env := newEnv(t, map[string]config.Partner{"acme": pc})
	results := make(chan Result, sends)
	for range sends {
		go func() { results <- env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD)) }()
	}
	for i := range sends {
		res := waitFor(t, results, time.Minute, "the sends")
		if !res.Delivered || res.Attempts != 1 {
			t.Fatalf("send %d of %d: Delivered %v Attempts %d err %v; want delivered by its first attempt", i+1, sends, res.Delivered, res.Attempts, res.Err)
		}
	}
	if hits.count() != sends {
		t.Errorf("tracker saw %d requests, want %d", hits.count(), sends)
	}
}

// sendDeliveredOnce makes n sends, each of which must be delivered by its
// first attempt.
func sendDeliveredOnce(t *testing.T, d *Dispatcher, n int) {
	t.Helper()
	for i := range n {
		res := d.Send(context.Background(), testPostback("acme", postback.GoalFTD))
		if !res.Delivered || res.Attempts != 1 {
			t.Fatalf("send %d: Delivered %v Attempts %d err %v; want delivered by one attempt", i+1, res.Delivered, res.Attempts, res.Err)
		}
	}
}
