package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/internal/tracker"
)

// latencyProbe measures how long a deposit takes from its publication to
// its postback's arrival at the tracker, at a steady offered rate. Each
// probe deposit has a click of its own (so it is an FTD), which maps the
// tracker's request back to its publication time.
type latencyProbe struct {
	mu       sync.Mutex
	sent     map[string]time.Time
	received map[string]time.Time
}

const probePrefix = "lat-"

func newLatencyProbe() *latencyProbe {
	return &latencyProbe{sent: map[string]time.Time{}, received: map[string]time.Time{}}
}

// observe is the tracker's OnRequest hook.
func (l *latencyProbe) observe(r tracker.Request) {
	click := r.Query.Get("click_id")
	if !strings.HasPrefix(click, probePrefix) {
		return
	}
	l.mu.Lock()
	if _, seen := l.received[click]; !seen {
		l.received[click] = r.At
	}
	l.mu.Unlock()
}

type latencyResult struct {
	rate          float64
	n             int
	p50, p95, p99 time.Duration
}

// run offers rate deposits/s for d (in 10 ms ticks), waits for their
// postbacks (bounded by timeout) and returns the latency percentiles and the
// rate actually offered.
func (l *latencyProbe) run(ctx context.Context, brokers []string, topic string, rate float64, d, timeout time.Duration) (latencyResult, error) {
	wr := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: time.Millisecond}
	defer wr.Close()
	const tick = 10 * time.Millisecond
	perTick := rate * tick.Seconds()
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	start := time.Now()
	end := start.Add(d)
	owed, n := 0.0, 0
	for time.Now().Before(end) {
		owed += perTick
		var batch []kafka.Message
		var clicks []string
		for ; owed >= 1; owed-- {
			click := fmt.Sprintf("%s%07d", probePrefix, n)
			n++
			v, _ := json.Marshal(map[string]any{
				"event_id": "ev-" + click, "occurred_at": time.Now().UTC().Format(time.RFC3339), "merchant_id": "m1",
				"click_id": click, "amount": "10.00", "currency": "USD", "status": "succeeded", "player_id": "p" + click,
			})
			batch = append(batch, kafka.Message{Key: []byte(click), Value: v})
			clicks = append(clicks, click)
		}
		if len(batch) > 0 {
			now := time.Now()
			l.mu.Lock()
			for _, c := range clicks {
				l.sent[c] = now
			}
			l.mu.Unlock()
			if err := wr.WriteMessages(ctx, batch...); err != nil {
				return latencyResult{}, err
			}
		}
		select {
		case <-ctx.Done():
			return latencyResult{}, ctx.Err()
		case <-ticker.C:
		}
	}
	offered := float64(n) / time.Since(start).Seconds()
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		got := len(l.received)
		l.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			return latencyResult{}, fmt.Errorf("latency probe: %d of %d postbacks arrived within %s", got, n, timeout)
		}
		select {
		case <-ctx.Done():
			return latencyResult{}, ctx.Err()
		case <-ticker.C:
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lat := make([]time.Duration, 0, n)
	for c, at := range l.received {
		lat = append(lat, at.Sub(l.sent[c]))
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return latencyResult{rate: offered, n: n, p50: pct(0.50), p95: pct(0.95), p99: pct(0.99)}, nil
}
