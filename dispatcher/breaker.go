package dispatcher

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// breaker is one partner's circuit breaker, counted per HTTP attempt:
//
//   - closed: every attempt goes through; `failures` consecutive failed
//     attempts (network error, timeout, 408, 429, 5xx) open it. Any answer
//     that is not such a failure — a success, and also a permanent refusal,
//     which proves the partner is up — resets the count.
//   - open: allow refuses everything until the cooldown has passed.
//   - half-open: after the cooldown exactly one attempt (the probe) is let
//     through; its success closes the breaker, its failure opens it for
//     another cooldown. While the probe is out everything else is refused.
//
// All state sits behind one mutex; the critical sections are a few
// comparisons, never I/O.
type breaker struct {
	threshold int
	cooldown  time.Duration
	gauge     prometheus.Gauge
	log       *zap.Logger

	mu        sync.Mutex
	state     breakerState
	failures  int
	openUntil time.Time
	probing   bool // half-open and the probe is out
}

type breakerState int

const (
	breakerClosed breakerState = iota
	breakerOpen
	breakerHalfOpen
)

// verdict is what one attempt says about the partner's health.
type verdict int

const (
	verdictHealthy verdict = iota // the partner answered (success or a permanent refusal)
	verdictFailed                 // retryable failure
	verdictNone                   // no information (our own context was cancelled)
)

func newBreaker(threshold int, cooldown time.Duration, gauge prometheus.Gauge, log *zap.Logger) *breaker {
	gauge.Set(0)
	return &breaker{threshold: threshold, cooldown: cooldown, gauge: gauge, log: log}
}

// allow reports whether an attempt may go out now. When it refuses, wait is
// how long until the breaker will let a probe through (0 while a probe is
// out). Every allowed attempt must be followed by exactly one report.
func (b *breaker) allow(now time.Time) (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case breakerOpen:
		if now.Before(b.openUntil) {
			return false, b.openUntil.Sub(now)
		}
		b.state = breakerHalfOpen
		b.probing = true
		return true, 0
	case breakerHalfOpen:
		if b.probing {
			return false, 0
		}
		b.probing = true
		return true, 0
	default:
		return true, 0
	}
}

// report records the verdict of an allowed attempt.
func (b *breaker) report(v verdict, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch v {
	case verdictNone:
		if b.state == breakerHalfOpen {
			b.probing = false // let the next caller probe
		}
	case verdictHealthy:
		if b.state != breakerClosed {
			b.log.Info("circuit breaker closed")
			b.gauge.Set(0)
		}
		b.state, b.failures, b.probing = breakerClosed, 0, false
	case verdictFailed:
		switch b.state {
		case breakerHalfOpen:
			b.open(now)
		case breakerClosed:
			b.failures++
			if b.failures >= b.threshold {
				b.open(now)
			}
		case breakerOpen:
			// An attempt allowed before the breaker opened; nothing to add.
		}
	}
}

func (b *breaker) open(now time.Time) {
	b.state, b.probing = breakerOpen, false
	b.openUntil = now.Add(b.cooldown)
	b.gauge.Set(1)
	b.log.Warn("circuit breaker opened",
		zap.Int("consecutive_failures", b.failures), zap.Duration("cooldown", b.cooldown))
}
