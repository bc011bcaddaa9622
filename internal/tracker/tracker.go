// Package tracker is a local partner tracker that records every postback it
// receives. Tests, the demo, the load harness and docker-compose use it as
// the far end of postbackd.
package tracker

import (
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Request is one received postback.
type Request struct {
	Path  string
	Query url.Values
	At    time.Time
}

// Responder decides the answer to a request; nil answers 200 "OK".
type Responder func(r *http.Request) (status int, body string)

// Tracker records requests. The zero value is not usable; call New.
type Tracker struct {
	mu        sync.Mutex
	requests  []Request
	respond   Responder
	count     atomic.Int64
	keep      bool
	notify    chan struct{}
	onRequest func(Request)
}

// Options configure a Tracker.
type Options struct {
	// Respond decides each answer (nil: 200 "OK").
	Respond Responder
	// CountOnly counts requests without keeping them (load tests).
	CountOnly bool
	// OnRequest is called for every request (e.g. to print it).
	OnRequest func(Request)
}

// New returns a tracker.
func New(o Options) *Tracker {
	return &Tracker{respond: o.Respond, keep: !o.CountOnly, notify: make(chan struct{}, 1), onRequest: o.OnRequest}
}

// ServeHTTP records the request and answers it.
func (t *Tracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status, body := http.StatusOK, "OK"
	t.mu.Lock()
	respond := t.respond
	t.mu.Unlock()
	if respond != nil {
		status, body = respond(r)
	}
	req := Request{Path: r.URL.Path, Query: r.URL.Query(), At: time.Now()}
	// Only accepted postbacks are recorded: a refused one is, to a partner,
	// as if it never arrived.
	if status >= 200 && status < 300 {
		if t.keep {
			t.mu.Lock()
			t.requests = append(t.requests, req)
			t.mu.Unlock()
		}
		t.count.Add(1)
		select {
		case t.notify <- struct{}{}:
		default:
		}
	}
	if t.onRequest != nil {
		t.onRequest(req)
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// SetResponder replaces the responder (safe while serving).
func (t *Tracker) SetResponder(r Responder) {
	t.mu.Lock()
	t.respond = r
	t.mu.Unlock()
}

// Count is the number of accepted requests so far.
func (t *Tracker) Count() int64 { return t.count.Load() }

// Requests returns a copy of the accepted requests so far.
func (t *Tracker) Requests() []Request {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Request(nil), t.requests...)
}

// WaitFor blocks until cond holds for the recorded requests or the timeout
// passes; it reports whether cond held.
func (t *Tracker) WaitFor(timeout time.Duration, cond func([]Request) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond(t.Requests()) {
			return true
		}
		select {
		case <-deadline.C:
			return cond(t.Requests())
		case <-t.notify:
		case <-tick.C:
		}
	}
}
