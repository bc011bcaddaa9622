package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/internal/tracker"
)

// latencyProbe measures how long a deposit takes from its publication to
// its postback's arrival at the tracker, at a steady offered rate. Each
// probe deposit has a click of its own (so it is an FTD), which maps the
// tracker's request back to its publication time. A probe's clicks share a
// prefix of its own, so probes of different phases never mix.
type latencyProbe struct {
	prefix   string
	merchant string
	mu       sync.Mutex
	sent     map[string]time.Time
	received map[string]time.Time
}

func newLatencyProbe(prefix, merchant string) *latencyProbe {
	return &latencyProbe{prefix: prefix, merchant: merchant, sent: map[string]time.Time{}, received: map[string]time.Time{}}
}

// activeProbe routes the tracker's requests to the probe of the running
// phase (nil: none).
type activeProbe struct{ p atomic.Pointer[latencyProbe] }

func (a *activeProbe) observe(r tracker.Request) {
	if p := a.p.Load(); p != nil {
		p.observe(r)
	}
}

// observe is the tracker's OnRequest hook.
func (l *latencyProbe) observe(r tracker.Request) {
	click := r.Query.Get("click_id")
	if !strings.HasPrefix(click, l.prefix) {
		return
	}
	l.mu.Lock()
	if _, seen := l.received[click]; !seen {
		l.received[click] = r.At
	}
	l.mu.Unlock()
}

type latencyResult struct {
	rate                      float64
	n                         int
	p50, p95, p99, p999, pmax time.Duration
}

// run offers rate deposits/s for d (in 10 ms ticks), waits for their
// postbacks (bounded by timeout) and returns the latency percentiles and the
// rate actually offered.
func (l *latencyProbe) run(ctx context.Context, brokers []string, topic string, rate float64, d, timeout time.Duration) (latencyResult, error) {
	n, offered, err := l.offer(ctx, brokers, topic, rate, d, nil)
	if err != nil {
		return latencyResult{}, err
	}
	if got, err := l.wait(ctx, n, timeout); err != nil {
		return latencyResult{}, err
	} else if got < n {
		return latencyResult{}, fmt.Errorf("latency probe: %d of %d postbacks arrived within %s", got, n, timeout)
	}
	lat := l.latencies(time.Time{}, time.Time{})
	r := percentiles(lat)
	r.rate, r.n = offered, n
	return r, nil
}

// offer publishes rate deposits/s, each in its own click, until d has
// passed or stop is closed. It returns how many it published and the rate
// it achieved.
func (l *latencyProbe) offer(ctx context.Context, brokers []string, topic string, rate float64, d time.Duration, stop <-chan struct{}) (int, float64, error) {
	wr := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: time.Millisecond}
	defer wr.Close()
	const tick = 10 * time.Millisecond
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	start := time.Now()
	end := start.Add(d)
	n := 0
	for d <= 0 || time.Now().Before(end) {
		// What is owed follows the clock, so a slow write makes the next
		// batch larger instead of lowering the offered rate.
		owed := int(rate*time.Since(start).Seconds()) - n
		var batch []kafka.Message
		var clicks []string
		for ; owed >= 1; owed-- {
			m := l.message(n, time.Now())
			n++
			batch = append(batch, m)
			clicks = append(clicks, string(m.Key))
		}
		if len(batch) > 0 {
			now := time.Now()
			l.mu.Lock()
			for _, c := range clicks {
				l.sent[c] = now
			}
			l.mu.Unlock()
			if err := writeRetry(ctx, wr, batch); err != nil {
				return n, 0, err
			}
		}
		select {
		case <-ctx.Done():
			return n, 0, ctx.Err()
		case <-stop:
			return n, float64(n) / time.Since(start).Seconds(), nil
		case <-ticker.C:
		}
	}
	return n, float64(n) / time.Since(start).Seconds(), nil
}

// message is probe deposit n: an FTD of a click of its own.
func (l *latencyProbe) message(n int, now time.Time) kafka.Message {
	click := fmt.Sprintf("%s%07d", l.prefix, n)
	v, _ := json.Marshal(map[string]any{
		"event_id": "ev-" + click, "occurred_at": now.UTC().Format(time.RFC3339), "merchant_id": l.merchant,
		"click_id": click, "amount": "10.00", "currency": "USD", "status": "succeeded", "player_id": "p" + click,
	})
	return kafka.Message{Key: []byte(click), Value: v}
}

// wait waits until n postbacks of the probe arrived, or timeout passed; it
// returns how many arrived.
func (l *latencyProbe) wait(ctx context.Context, n int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		l.mu.Lock()
		got := len(l.received)
		l.mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-t.C:
		}
	}
}

// latencies returns the publication-to-tracker latency of every probe
// deposit published in [from, to) whose postback arrived, sorted (zero
// bounds: no bound).
func (l *latencyProbe) latencies(from, to time.Time) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	lat := make([]time.Duration, 0, len(l.received))
	for c, at := range l.received {
		s, ok := l.sent[c]
		if !ok || (!from.IsZero() && s.Before(from)) || (!to.IsZero() && !s.Before(to)) {
			continue
		}
		lat = append(lat, at.Sub(s))
	}
	slices.Sort(lat)
	return lat
}

// arrivals returns the arrival times of the probe's postbacks, sorted.
func (l *latencyProbe) arrivals() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	at := make([]time.Time, 0, len(l.received))
	for _, t := range l.received {
		at = append(at, t)
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	return at
}

// sentIn counts the probe deposits published in [from, to).
func (l *latencyProbe) sentIn(from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.sent {
		if !s.Before(from) && s.Before(to) {
			n++
		}
	}
	return n
}

// percentiles are nearest-rank percentiles of sorted latencies.
func percentiles(sorted []time.Duration) latencyResult {
	if len(sorted) == 0 {
		return latencyResult{}
	}
	pct := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(sorted)))) - 1
		return sorted[min(max(i, 0), len(sorted)-1)]
	}
	return latencyResult{n: len(sorted), p50: pct(0.50), p95: pct(0.95), p99: pct(0.99), p999: pct(0.999), pmax: sorted[len(sorted)-1]}
}

// longestGap is the longest stretch of [from, to] with no arrival: between
// from and the first arrival in the window, between consecutive arrivals,
// and between the last one and to. arrivals must be sorted.
func longestGap(arrivals []time.Time, from, to time.Time) time.Duration {
	prev, gap := from, time.Duration(0)
	for _, a := range arrivals {
		if a.Before(from) {
			continue
		}
		if a.After(to) {
			break
		}
		gap = max(gap, a.Sub(prev))
		prev = a
	}
	return max(gap, to.Sub(prev))
}
