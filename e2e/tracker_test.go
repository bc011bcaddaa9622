package e2e

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postbackd/postbackd/internal/tracker"
)

// accepted is one postback the scripted tracker accepted.
type accepted struct {
	seq     int // order of acceptance across all postbacks
	arrived time.Time
	key     string
	path    string
	query   url.Values
	at      time.Time
}

// txOf is the transaction id the partner received (scaleo: transaction_id,
// datingnet: tid).
func (a accepted) txOf() string {
	if tx := a.query.Get("transaction_id"); tx != "" {
		return tx
	}
	return a.query.Get("tid")
}

// scriptedTracker answers postbacks per the script's plan and keeps its own
// books of what it accepted: a partner's "accepted" is what it answered with
// success (a 200 carrying "ERROR" in its body is a refusal, not a receipt).
type scriptedTracker struct {
	*tracker.Tracker
	addr string

	mu       sync.Mutex
	plan     map[string]string
	delay    time.Duration
	slots    chan struct{}  // nil: unlimited concurrency
	attempts map[string]int // key → requests seen
	accepted []accepted
	byKey    map[string][]accepted
	inFlight int // requests arrived and not yet answered

	faults *trackerFaults // nil: none (chaos runs set them)
	counts map[string]int // fault kind → requests it answered
}

// trackerFaults are a misbehaving partner's answers, drawn per request:
// shares (of 1000) of 503s, 429s with Retry-After, slow answers, timeouts
// (answered, and so accepted, after the partner's timeout: a request whose
// answer never came) and connection resets (before anything is accepted);
// and a path prefix that answers 503 to everything until downUntil (one
// partner fully down).
type trackerFaults struct {
	rng                                  *rand.Rand
	err503, err429, slow, timeout, reset int
	slowFor, timeoutFor                  time.Duration
	downPrefix                           string
	downUntil                            time.Time
}

// startTracker serves a scripted tracker on 127.0.0.1:0 until the test ends.
func startTracker(t *testing.T, plan map[string]string) *scriptedTracker {
	t.Helper()
	st := &scriptedTracker{plan: plan, attempts: map[string]int{}, byKey: map[string][]accepted{}, counts: map[string]int{}}
	st.Tracker = tracker.New(tracker.Options{Respond: st.respond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(st.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return st
}

// setSlow makes a slow partner that serves at most concurrency requests at
// once, each taking d, so that work is in flight when a test kills, stops or
// adds a member. Zero values make it fast again.
func (st *scriptedTracker) setSlow(d time.Duration, concurrency int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.delay = d
	st.slots = nil
	if concurrency > 0 {
		st.slots = make(chan struct{}, concurrency)
	}
}

// draw picks this request's fault ("" none), under st.mu.
func (st *scriptedTracker) draw(path string) string {
	f := st.faults
	if f == nil {
		return ""
	}
	if f.downPrefix != "" && strings.HasPrefix(path, f.downPrefix) && time.Now().Before(f.downUntil) {
		return "down"
	}
	n := f.rng.IntN(1000)
	for _, c := range []struct {
		kind  string
		share int
	}{{"503", f.err503}, {"429", f.err429}, {"slow", f.slow}, {"timeout", f.timeout}, {"reset", f.reset}} {
		if n < c.share {
			return c.kind
		}
		n -= c.share
	}
	return ""
}

// serve answers one request: a reset fault drops the connection before
// anything is accepted; everything else goes to the recording tracker.
func (st *scriptedTracker) serve(w http.ResponseWriter, r *http.Request) {
	st.mu.Lock()
	fault := st.draw(r.URL.Path)
	if fault != "" {
		st.counts[fault]++
	}
	st.mu.Unlock()
	if fault == "429" {
		// Too many requests, come back in a second: the sender must honour it.
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	if fault == "reset" {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST, not FIN
				}
				_ = conn.Close()
				return
			}
		}
	}
	st.Tracker.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), faultKey{}, fault)))
}

type faultKey struct{}

func (st *scriptedTracker) respond(r *http.Request) (int, string) {
	// In flight from its arrival: a slow answer is a request whose sender
	// may die before it comes.
	st.mu.Lock()
	st.inFlight++
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		st.inFlight--
		st.mu.Unlock()
	}()
	fault, _ := r.Context().Value(faultKey{}).(string)
	switch fault {
	case "down", "503":
		return http.StatusServiceUnavailable, "busy"
	case "slow", "timeout":
		st.mu.Lock()
		d := st.faults.slowFor
		if fault == "timeout" {
			d = st.faults.timeoutFor
		}
		st.mu.Unlock()
		time.Sleep(d) // the partner's own slowness, not synchronisation
	}
	arrived := time.Now()
	q := r.URL.Query()
	key := pbKey(q.Get("g"), q.Get("status"), q.Get("event_id"))
	st.mu.Lock()
	n := st.attempts[key]
	st.attempts[key]++
	plan, delay, slots := st.plan[q.Get("event_id")], st.delay, st.slots
	st.mu.Unlock()
	if slots != nil {
		slots <- struct{}{}
		defer func() { <-slots }()
	}
	if delay > 0 {
		time.Sleep(delay) // a slow partner, not synchronisation
	}
	switch {
	case plan == planRetry2 && n < 2, plan == planRetry5 && n < 5:
		return http.StatusServiceUnavailable, "busy"
	case plan == planRefuse:
		return http.StatusBadRequest, "unknown click"
	case q.Get("offer") == expiredOffer:
		return http.StatusOK, "ERROR offer expired"
	}
	st.mu.Lock()
	a := accepted{seq: len(st.accepted), arrived: arrived, key: key, path: r.URL.Path, query: q, at: time.Now()}
	st.accepted = append(st.accepted, a)
	st.byKey[key] = append(st.byKey[key], a)
	st.mu.Unlock()
	return http.StatusOK, "OK"
}

// inFlightNow is the number of requests being answered right now.
func (st *scriptedTracker) inFlightNow() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.inFlight
}

// distinct is the number of distinct keys accepted so far.
func (st *scriptedTracker) distinct() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.byKey)
}

// snapshot copies the books.
func (st *scriptedTracker) snapshot() map[string][]accepted {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[string][]accepted, len(st.byKey))
	for k, v := range st.byKey {
		out[k] = append([]accepted(nil), v...)
	}
	return out
}
