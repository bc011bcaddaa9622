package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/postback"
)

func TestSendClassification(t *testing.T) {
	type want struct {
		delivered, permanent bool
		attempts             int
		status               int
		is                   error // errors.Is target, nil = none checked
	}
	status := func(code int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			_, _ = w.Write([]byte(body))
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		partner func(*config.Partner)
		want    want
	}{
		{"200", status(200, "ok"), nil, want{delivered: true, attempts: 1, status: 200}},
		{"201", status(201, ""), nil, want{delivered: true, attempts: 1, status: 201}},
		{"204", status(204, ""), nil, want{delivered: true, attempts: 1, status: 204}},
		{"301 not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
		}, nil, want{permanent: true, attempts: 1, status: 301, is: ErrRefused}},
		{"301 listed as success", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
		}, func(p *config.Partner) { p.Success.Statuses = []int{200, 301} },
			want{delivered: true, attempts: 1, status: 301}},
		{"400", status(400, "bad click"), nil, want{permanent: true, attempts: 1, status: 400, is: ErrRefused}},
		{"401", status(401, "bad token"), nil, want{permanent: true, attempts: 1, status: 401, is: ErrRefused}},
		{"404", status(404, ""), nil, want{permanent: true, attempts: 1, status: 404, is: ErrRefused}},
		{"408", status(408, ""), nil, want{attempts: 3, status: 408}},
		{"429", status(429, "slow down"), nil, want{attempts: 3, status: 429}},
		{"500", status(500, "oops"), nil, want{attempts: 3, status: 500}},
		{"502", status(502, ""), nil, want{attempts: 3, status: 502}},
		{"503", status(503, ""), nil, want{attempts: 3, status: 503}},
		{"network error", func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		}, nil, want{attempts: 3}},
		{"timeout", func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, func(p *config.Partner) { p.Timeout = 50 * time.Millisecond },
			want{attempts: 3, is: context.DeadlineExceeded}},
		{"body refusal with 200", status(200, "ERROR: duplicate click"),
			func(p *config.Partner) { p.Success.BodyPattern = `^OK` },
			want{permanent: true, attempts: 1, status: 200, is: ErrRefused}},
		{"body accepted with 200", status(200, "OK conversion 77"),
			func(p *config.Partner) { p.Success.BodyPattern = `^OK` },
			want{delivered: true, attempts: 1, status: 200}},
		{"500 with quick attempts 1", status(500, ""),
			func(p *config.Partner) { p.Retry.QuickAttempts = 1 }, want{attempts: 1, status: 500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits, elsewhere counter
			mux := http.NewServeMux()
			mux.HandleFunc("/pb", func(w http.ResponseWriter, r *http.Request) { hits.hit(r); tt.handler(w, r) })
			mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { elsewhere.hit(r) })
			srv := httptest.NewServer(mux)
			defer srv.Close()
			pc := serverPartner(srv)
			if tt.partner != nil {
				tt.partner(&pc)
			}
			env := newEnv(t, map[string]config.Partner{"acme": pc})

			res := env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD))

			if res.Delivered != tt.want.delivered || res.Permanent != tt.want.permanent {
				t.Errorf("Delivered, Permanent = %v, %v; want %v, %v (err %v)",
					res.Delivered, res.Permanent, tt.want.delivered, tt.want.permanent, res.Err)
			}
			if (res.Err == nil) != res.Delivered {
				t.Errorf("Err = %v with Delivered %v", res.Err, res.Delivered)
			}
			if res.Attempts != tt.want.attempts || hits.count() != tt.want.attempts {
				t.Errorf("Attempts = %d, server saw %d; want %d", res.Attempts, hits.count(), tt.want.attempts)
			}
			if res.HTTPStatus != tt.want.status {
				t.Errorf("HTTPStatus = %d, want %d", res.HTTPStatus, tt.want.status)
			}
			if tt.want.is != nil && !errors.Is(res.Err, tt.want.is) {
				t.Errorf("Err = %v, want it to wrap %v", res.Err, tt.want.is)
			}
			if elsewhere.count() != 0 {
				t.Errorf("redirect followed")
			}
			if res.Err != nil && strings.Contains(res.Err.Error(), testToken) ||
				res.Err != nil && strings.Contains(res.Err.Error(), "a%2Bb%2Fc%3D") {
				t.Errorf("error leaks the token: %v", res.Err)
			}
			if !strings.Contains(res.URL, "token="+redacted) {
				t.Errorf("URL = %q, want the token redacted", res.URL)
			}
			if got := metricValue(t, env.metrics.Retries.WithLabelValues("acme", "in_place")); int(got) != max(tt.want.attempts-1, 0) {
				t.Errorf("in-place retries metric = %v, want %d", got, tt.want.attempts-1)
			}
			if n := metricValue(t, env.metrics.DispatchSeconds.WithLabelValues("acme").(prometheus.Metric)); int(n) != tt.want.attempts {
				t.Errorf("DispatchSeconds observations = %v, want one per attempt (%d)", n, tt.want.attempts)
			}
			if res.FirstAttempt.IsZero() || res.LastAttempt.Before(res.FirstAttempt) {
				t.Errorf("FirstAttempt %v, LastAttempt %v", res.FirstAttempt, res.LastAttempt)
			}
			for _, ua := range hits.uas {
				if ua != "postbackd/test" {
					t.Errorf("User-Agent = %q", ua)
				}
			}
		})
	}
}

func TestSendFailsThenSucceeds(t *testing.T) {
	var hits counter
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.hit(r) == 1 {
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	env := newEnv(t, map[string]config.Partner{"acme": serverPartner(srv)})
	res := env.d.Send(context.Background(), testPostback("acme", postback.GoalRD))
	if !res.Delivered || res.Attempts != 2 || res.HTTPStatus != 200 || res.Err != nil {
		t.Fatalf("got Delivered %v Attempts %d status %d err %v; want delivered after 2",
			res.Delivered, res.Attempts, res.HTTPStatus, res.Err)
	}
	if got := metricValue(t, env.metrics.Retries.WithLabelValues("acme", "in_place")); got != 1 {
		t.Errorf("retries metric = %v, want 1", got)
	}
}

func TestSendRetryAfter(t *testing.T) {
	clock := newFakeClock()
	tests := []struct {
		name        string
		header      string
		maxInterval time.Duration
		wantAfter   time.Duration
		attempts    int // 1: quick retries stopped, hint handed to the delayed path
	}{
		{"seconds beyond budget", "120", 5 * time.Millisecond, 120 * time.Second, 1},
		{"date beyond budget", clock.Now().Add(2 * time.Hour).Format(http.TimeFormat), 5 * time.Millisecond, 2 * time.Hour, 1},
		{"date in the past ignored", clock.Now().Add(-time.Hour).Format(http.TimeFormat), 5 * time.Millisecond, 0, 3},
		{"garbage ignored", "soon", 5 * time.Millisecond, 0, 3},
		{"zero ignored", "0", 5 * time.Millisecond, 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits counter
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.hit(r)
				w.Header().Set("Retry-After", tt.header)
				w.WriteHeader(http.StatusTooManyRequests)
			}))
			defer srv.Close()
			pc := serverPartner(srv)
			pc.Retry.MaxInterval = tt.maxInterval
			d, err := New(map[string]config.Partner{"acme": pc}, Options{Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			res := d.Send(context.Background(), testPostback("acme", postback.GoalFTD))
			if res.Delivered || res.Permanent {
				t.Fatalf("Delivered %v Permanent %v, want a retryable failure", res.Delivered, res.Permanent)
			}
			if res.Attempts != tt.attempts || hits.count() != tt.attempts {
				t.Errorf("Attempts = %d (server %d), want %d", res.Attempts, hits.count(), tt.attempts)
			}
			if res.RetryAfter != tt.wantAfter {
				t.Errorf("RetryAfter = %v, want %v", res.RetryAfter, tt.wantAfter)
			}
		})
	}
}

// A Retry-After within the in-place budget is waited for, then retried.
func TestSendRetryAfterHonouredInPlace(t *testing.T) {
	var hits counter
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.hit(r) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	pc := serverPartner(srv)
	pc.Retry.MaxInterval = 2 * time.Second
	env := newEnv(t, map[string]config.Partner{"acme": pc})
	res := env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD))
	if !res.Delivered || res.Attempts != 2 {
		t.Fatalf("Delivered %v Attempts %d err %v, want delivered on attempt 2", res.Delivered, res.Attempts, res.Err)
	}
	hits.mu.Lock()
	gap := hits.times[1].Sub(hits.times[0])
	hits.mu.Unlock()
	if gap < time.Second {
		t.Errorf("second attempt came %v after the first, want >= the 1s Retry-After", gap)
	}
}

// sendCancelledInFlight starts a Send, waits until its request reaches the
// tracker (arrived) and cancels its context; the Send's result comes on the
// channel it returns.
func sendCancelledInFlight(t *testing.T, d *Dispatcher, arrived <-chan struct{}) <-chan Result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan Result, 1)
	go func() { done <- d.Send(ctx, testPostback("acme", postback.GoalFTD)) }()
	waitFor(t, arrived, 5*time.Second, "the request")
	cancel()
	return done
}

func TestSendContextCancelled(t *testing.T) {
	// An attempt that has started is seen through to its answer: cancelling
	// does not abandon a request the tracker may be acting on, and no
	// further attempt starts.
	t.Run("during a request the tracker answers", func(t *testing.T) {
		arrived := make(chan struct{}, 1)
		release := make(chan struct{})
		var hits counter
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.hit(r)
			arrived <- struct{}{}
			<-release
		}))
		defer srv.Close()
		pc := serverPartner(srv)
		pc.Timeout = time.Minute
		env := newEnv(t, map[string]config.Partner{"acme": pc})
		done := sendCancelledInFlight(t, env.d, arrived)
		select {
		case res := <-done:
			t.Fatalf("Send returned before the tracker answered: %+v", res)
		default:
		}
		close(release)
		res := waitFor(t, done, 5*time.Second, "Send to return after the answer")
		if !res.Delivered || res.Attempts != 1 || hits.count() != 1 {
			t.Errorf("got Delivered %v Attempts %d err %v, server saw %d; want delivered by the one attempt",
				res.Delivered, res.Attempts, res.Err, hits.count())
		}
	})
	t.Run("during a request the tracker never answers", func(t *testing.T) {
		arrived := make(chan struct{}, 3)
		release := make(chan struct{})
		defer close(release)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		pc := serverPartner(srv)
		pc.Timeout = 200 * time.Millisecond
		env := newEnv(t, map[string]config.Partner{"acme": pc})
		done := sendCancelledInFlight(t, env.d, arrived)
		res := waitFor(t, done, 5*time.Second, "Send to return after the attempt's timeout")
		if res.Delivered || res.Permanent || !errors.Is(res.Err, context.Canceled) || res.Attempts != 1 {
			t.Errorf("got Delivered %v Permanent %v Attempts %d err %v; want stopped after 1 attempt",
				res.Delivered, res.Permanent, res.Attempts, res.Err)
		}
		if res.Latency < pc.Timeout {
			t.Errorf("the attempt lasted %s; want it to run to its timeout %s", res.Latency, pc.Timeout)
		}
	})
	t.Run("during backoff", func(t *testing.T) {
		arrived := make(chan struct{}, 3)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			w.WriteHeader(500)
		}))
		defer srv.Close()
		pc := serverPartner(srv)
		pc.Retry.InitialInterval, pc.Retry.MaxInterval = time.Hour, time.Hour
		env := newEnv(t, map[string]config.Partner{"acme": pc})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan Result, 1)
		go func() { done <- env.d.Send(ctx, testPostback("acme", postback.GoalFTD)) }()
		waitFor(t, arrived, 5*time.Second, "the request")
		// The retry counter moves just before the backoff wait starts.
		retries := env.metrics.Retries.WithLabelValues("acme", "in_place").(prometheus.Metric)
		for deadline := time.Now().Add(5 * time.Second); metricValue(t, retries) < 1; {
			if time.Now().After(deadline) {
				t.Fatal("Send never started its backoff wait")
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
		res := waitFor(t, done, 5*time.Second, "Send to return after cancel")
		if res.Delivered || res.Permanent || !errors.Is(res.Err, context.Canceled) || res.Attempts != 1 {
			t.Errorf("got Delivered %v Permanent %v Attempts %d err %v; want cancelled after 1 attempt",
				res.Delivered, res.Permanent, res.Attempts, res.Err)
		}
		if res.HTTPStatus != 500 {
			t.Errorf("HTTPStatus = %d, want the last answer 500", res.HTTPStatus)
		}
	})
	t.Run("before the first attempt", func(t *testing.T) {
		var hits counter
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.hit(r) }))
		defer srv.Close()
		env := newEnv(t, map[string]config.Partner{"acme": serverPartner(srv)})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res := env.d.Send(ctx, testPostback("acme", postback.GoalFTD))
		if res.Delivered || res.Permanent || res.Attempts != 0 || hits.count() != 0 || !errors.Is(res.Err, context.Canceled) {
			t.Errorf("got %+v, server %d; want no attempt", res, hits.count())
		}
	})
}

func TestSendRateLimit(t *testing.T) {
	const n, perSecond = 10, 50.0
	var hits counter
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.hit(r) }))
	defer srv.Close()
	pc := serverPartner(srv)
	pc.RateLimit = config.RateLimit{PerSecond: perSecond, Burst: 1}
	env := newEnv(t, map[string]config.Partner{"acme": pc})

	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if res := env.d.Send(context.Background(), testPostback("acme", postback.GoalRD)); !res.Delivered {
				t.Errorf("Send: %v", res.Err)
			}
		})
	}
	wg.Wait()
	hits.mu.Lock()
	defer hits.mu.Unlock()
	if len(hits.times) != n {
		t.Fatalf("server saw %d requests, want %d", len(hits.times), n)
	}
	first, last := hits.times[0], hits.times[0]
	for _, ts := range hits.times {
		first, last = minTime(first, ts), maxTime(last, ts)
	}
	// A limiter of burst 1 can never let n requests through in less than
	// (n-1)/rate; allow 20 % for server-side timestamping jitter.
	minSpan := time.Duration(float64(n-1) / perSecond * float64(time.Second) * 0.8)
	if span := last.Sub(first); span < minSpan {
		t.Errorf("%d requests arrived within %v, want >= %v at %v/s", n, span, minSpan, perSecond)
	}
}

func TestSendRateLimitDeadlineTooNear(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	pc := serverPartner(srv)
	pc.RateLimit = config.RateLimit{PerSecond: 0.001, Burst: 1} // one token, then none for ~17 min
	env := newEnv(t, map[string]config.Partner{"acme": pc})
	if res := env.d.Send(context.Background(), testPostback("acme", postback.GoalRD)); !res.Delivered {
		t.Fatalf("first Send: %v", res.Err)
	}
	defer env.d.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := env.d.Send(ctx, testPostback("acme", postback.GoalRD))
	if res.Delivered || res.Permanent || res.Attempts != 0 || res.Err == nil {
		t.Errorf("got %+v; want an immediate, retryable refusal with no attempt", res)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func TestSendBreaker(t *testing.T) {
	var hits counter
	var mu sync.Mutex
	code := 500
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.hit(r)
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(code)
	}))
	defer srv.Close()
	setCode := func(c int) { mu.Lock(); code = c; mu.Unlock() }
	pc := serverPartner(srv)
	pc.Retry.QuickAttempts = 2
	pc.Breaker = config.Breaker{Failures: 4, Cooldown: time.Minute}
	env := newEnv(t, map[string]config.Partner{"acme": pc})
	send := func() Result { return env.d.Send(context.Background(), testPostback("acme", postback.GoalFTD)) }
	gauge := func() float64 { return metricValue(t, env.metrics.BreakerOpen.WithLabelValues("acme")) }

	// Two sends of two failing attempts each: four consecutive failures.
	for i := range 2 {
		if res := send(); res.Delivered || errors.Is(res.Err, ErrBreakerOpen) || res.Attempts != 2 {
			t.Fatalf("send %d: %+v, want two failed attempts", i, res)
		}
	}
	if gauge() != 1 {
		t.Errorf("BreakerOpen gauge = %v, want 1", gauge())
	}
	before := hits.count()
	res := send()
	if !errors.Is(res.Err, ErrBreakerOpen) || res.Permanent || res.Attempts != 0 || hits.count() != before {
		t.Fatalf("open breaker: %+v, server %d→%d; want ErrBreakerOpen, no request", res, before, hits.count())
	}
	if res.RetryAfter != time.Minute {
		t.Errorf("RetryAfter = %v, want the cooldown 1m", res.RetryAfter)
	}

	// After the cooldown one probe goes out; it fails, so the breaker opens
	// again at once, without the quick retry.
	env.clock.Add(time.Minute)
	res = send()
	if res.Attempts != 1 || errors.Is(res.Err, ErrBreakerOpen) || res.HTTPStatus != 500 {
		t.Fatalf("failing probe: %+v, want one attempt answered 500", res)
	}
	if res := send(); !errors.Is(res.Err, ErrBreakerOpen) {
		t.Fatalf("after a failed probe: %v, want ErrBreakerOpen", res.Err)
	}

	// The next probe succeeds and closes it.
	setCode(200)
	env.clock.Add(time.Minute)
	if res := send(); !res.Delivered || res.Attempts != 1 {
		t.Fatalf("probe: %+v, want delivered", res)
	}
	if gauge() != 0 {
		t.Errorf("BreakerOpen gauge = %v after a successful probe, want 0", gauge())
	}
	if res := send(); !res.Delivered {
		t.Fatalf("after close: %v", res.Err)
	}
}

func TestBreakerStates(t *testing.T) {
	clock := newFakeClock()
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "test_breaker_open"})
	b := newBreaker(2, time.Second, gauge, zap.NewNop())
	step := func(v verdict) {
		t.Helper()
		if ok, _ := b.allow(clock.Now()); !ok {
			t.Fatalf("allow refused in state %v", b.state)
		}
		b.report(v, clock.Now())
	}
	step(verdictFailed)
	step(verdictHealthy) // a permanent refusal or success resets the count
	step(verdictFailed)
	if b.state != breakerClosed {
		t.Fatalf("opened after non-consecutive failures")
	}
	step(verdictFailed)
	if ok, wait := b.allow(clock.Now()); ok || wait != time.Second {
		t.Fatalf("allow = %v, %v; want refused for 1s", ok, wait)
	}
	clock.Add(time.Second)
	if ok, _ := b.allow(clock.Now()); !ok {
		t.Fatal("probe refused after cooldown")
	}
	if ok, _ := b.allow(clock.Now()); ok {
		t.Fatal("second concurrent probe allowed")
	}
	b.report(verdictNone, clock.Now()) // the probe was cancelled: next caller probes
	if ok, _ := b.allow(clock.Now()); !ok {
		t.Fatal("no probe after a cancelled one")
	}
	b.report(verdictHealthy, clock.Now())
	if b.state != breakerClosed || b.failures != 0 {
		t.Fatalf("state %v failures %d after a good probe", b.state, b.failures)
	}
}

// A partner that never answers must not slow sends to another partner.
func TestSlowPartnerIsolated(t *testing.T) {
	slowArrived := make(chan struct{}, 1)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowArrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer fast.Close()
	sp := serverPartner(slow)
	sp.Timeout = time.Minute
	env := newEnv(t, map[string]config.Partner{"slow": sp, "fast": serverPartner(fast)})

	slowDone := make(chan Result, 1)
	go func() { slowDone <- env.d.Send(context.Background(), testPostback("slow", postback.GoalFTD)) }()
	waitFor(t, slowArrived, 5*time.Second, "the slow partner's request")

	fastDone := make(chan Result, 1)
	go func() {
		for range 20 {
			if res := env.d.Send(context.Background(), testPostback("fast", postback.GoalFTD)); !res.Delivered {
				fastDone <- res
				return
			}
		}
		fastDone <- Result{Delivered: true}
	}()
	if res := waitFor(t, fastDone, 5*time.Second, "the fast partner's sends"); !res.Delivered {
		t.Fatalf("fast partner: %v", res.Err)
	}
	select {
	case <-slowDone:
		t.Fatal("slow send finished before it was released; the test proves nothing")
	default:
	}
	close(release)
	if res := waitFor(t, slowDone, 5*time.Second, "the slow send"); !res.Delivered {
		t.Errorf("slow partner after release: %v", res.Err)
	}
}

// No log line, at any level, carries the token in any form.
func TestNoSecretInLogs(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		_, _ = w.Write([]byte("echo " + r.URL.RawQuery)) // a partner echoing our URL
	}))
	defer srv.Close()
	pc := serverPartner(srv)
	pc.Breaker.Failures = 2
	d, err := New(map[string]config.Partner{"acme": pc}, Options{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	res := d.Send(context.Background(), testPostback("acme", postback.GoalFTD))
	if res.Delivered {
		t.Fatal("delivered against a failing partner")
	}
	if logs.Len() == 0 {
		t.Fatal("no log entries: the test proves nothing")
	}
	forms := []string{testToken, "a%2Bb%2Fc%3D", "a+b%2Fc="}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		for _, f := range forms {
			if strings.Contains(line, f) {
				t.Errorf("log line leaks the token as %q: %s", f, line)
			}
		}
	}
	for _, f := range forms {
		if strings.Contains(res.Err.Error(), f) {
			t.Errorf("error leaks the token as %q: %v", f, res.Err)
		}
	}
}

func toString(v any) string { return fmt.Sprint(v) }

// metricValue reads a counter's or gauge's value, or a histogram's sample count.
func metricValue(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatal(err)
	}
	switch {
	case pb.Counter != nil:
		return pb.Counter.GetValue()
	case pb.Gauge != nil:
		return pb.Gauge.GetValue()
	case pb.Histogram != nil:
		return float64(pb.Histogram.GetSampleCount())
	}
	t.Fatalf("unsupported metric %v", m.Desc())
	return 0
}

// TestTokenEchoedInLongBodyNeverLeaks: a partner that echoes the token in a
// long answer, at every offset around the cut of the error's body snippet,
// for a retryable status, a permanent one and a body-level refusal: no
// prefix of the token reaches the error (redaction comes before the cut).
func TestTokenEchoedInLongBodyNeverLeaks(t *testing.T) {
	const token = "Zq7tokSECRETvalue42"
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, _ := strconv.Atoi(r.URL.Query().Get("status"))
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body.Load().(string)))
	}))
	defer srv.Close()
	pc := serverPartner(srv)
	pc.Token = config.SecretRef{Value: token}
	pc.Retry.QuickAttempts = 1
	pc.Breaker.Failures = 1 << 20
	pc.Success = config.SuccessRule{Statuses: []int{200}, BodyPattern: "^OK"}
	for g, gc := range pc.Goals {
		gc.URL += "&status={param.status}"
		pc.Goals[g] = gc
	}
	d, err := New(map[string]config.Partner{"acme": pc}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, status := range []string{"503", "400", "200"} {
		for offset := 0; offset <= maxSnippet+len(token); offset++ {
			body.Store(strings.Repeat(".", offset) + token + strings.Repeat("~", 2*maxSnippet))
			pb := testPostback("acme", postback.GoalFTD)
			pb.Params = map[string]string{"status": status}
			res := d.Send(context.Background(), pb)
			if res.Delivered || res.Err == nil {
				t.Fatalf("status %s: delivered against a refusing partner", status)
			}
			msg := res.Err.Error()
			for n := 4; n <= len(token); n++ {
				if strings.Contains(msg, token[:n]) {
					t.Fatalf("status %s, token at offset %d: the error leaks %q: %s", status, offset, token[:n], msg)
				}
			}
			var re *ResponseError
			if !errors.As(res.Err, &re) || len(re.Body) > maxSnippet || !utf8.ValidString(re.Body) {
				t.Fatalf("status %s, offset %d: response error %+v; want a valid snippet of at most %d bytes", status, offset, re, maxSnippet)
			}
		}
	}
}

// The request carries the rendered URL byte for byte (escapes included) and
// its host, attempt after attempt.
func TestSendRequestIsTheRenderedURL(t *testing.T) {
	type seen struct{ host, uri string }
	got := make(chan seen, 3)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.RequestURI}
		w.WriteHeader(503)
	}))
	defer srv.Close()
	pc := serverPartner(srv)
	env := newEnv(t, map[string]config.Partner{"acme": pc})
	pb := testPostback("acme", postback.GoalFTD)
	pb.ClickID = "a b/c?d=e&f%g+ü"

	r, err := env.d.Render(pb)
	if err != nil {
		t.Fatal(err)
	}
	res := env.d.Send(context.Background(), pb)
	if res.Attempts != 3 {
		t.Fatalf("Attempts = %d, want 3 (503 each)", res.Attempts)
	}
	u, _ := url.Parse(srv.URL)
	want := strings.TrimPrefix(r.URL, srv.URL)
	for i := range 3 {
		s := <-got
		if s.host != u.Host || s.uri != want {
			t.Errorf("attempt %d: Host %q, RequestURI %q; want %q, %q", i+1, s.host, s.uri, u.Host, want)
		}
	}
}

// A rendered host with an empty port is sent as http.NewRequest would: the
// host alone (the scheme's default port).
func TestRenderEmptyPort(t *testing.T) {
	pc := config.Partner{
		Goals:        map[postback.Goal]config.GoalConfig{postback.GoalFTD: {URL: "http://tracker.example:/pb?cid={click_id}"}},
		AllowedHosts: []string{"tracker.example"},
	}
	env := newEnv(t, map[string]config.Partner{"acme": pc})
	r, err := env.d.Render(testPostback("acme", postback.GoalFTD))
	if err != nil {
		t.Fatal(err)
	}
	if r.URL != "http://tracker.example:/pb?cid=click-1" || r.target != "http://tracker.example/pb?cid=click-1" {
		t.Errorf("URL %q, request target %q; want the URL as rendered and the target on host tracker.example", r.URL, r.target)
	}
}
