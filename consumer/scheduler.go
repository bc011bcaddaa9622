package consumer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// scheduler runs jobs concurrently across keys and strictly one after another
// within a key, in submission order. A key is run by one worker only while it
// has queued work; acquire bounds the jobs admitted and not yet finished to
// the slot count, so busy workers and queued jobs never exceed it.
//
// Workers outlive their key: one whose queue emptied parks for up to
// workerIdle and takes the next key that starts, instead of a goroutine being
// started per key and exiting with it. A job runs deep (decode, Redis,
// HTTP, Kafka), and a new goroutine grew its stack to that depth by copying
// it several times: with a goroutine per key that was 4 % of postbackd's CPU
// at full speed. An idle worker exits, so a quiet consumer holds none.
type scheduler struct {
	slots chan struct{}

	mu   sync.Mutex
	keys map[string]*keyQueue

	// handoff passes a run to a parked worker. Unbuffered: a send succeeds
	// only when a worker is waiting, and start otherwise starts one.
	handoff chan keyRun
	// started counts the workers started (for tests).
	started atomic.Int64

	// onAcquire and onRelease observe the in-flight count (metrics); they
	// may be nil.
	onAcquire, onRelease func()
}

type keyQueue struct {
	jobs []func()
	next int
}

// keyRun is a worker's assignment: a key's queue to drain, or one job
// without a key (key and q unset).
type keyRun struct {
	key string
	q   *keyQueue
	one func()
}

// workerIdle is how long a worker with nothing to run waits for the next key
// before it exits. Under load a worker is handed a new key within
// microseconds; a second is long enough to carry it across the gaps between
// fetches and short enough that a quiet consumer soon holds no workers.
const workerIdle = time.Second

func newScheduler(slots int) *scheduler {
	return &scheduler{slots: make(chan struct{}, slots), keys: make(map[string]*keyQueue), handoff: make(chan keyRun)}
}

// acquire takes one in-flight slot, blocking while all are taken: this is the
// consumer's backpressure. Every successful acquire must be followed by
// exactly one dispatch (which releases the slot when the job ends) or
// release.
func (s *scheduler) acquire(ctx context.Context) error {
	select {
	case s.slots <- struct{}{}:
		if s.onAcquire != nil {
			s.onAcquire()
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *scheduler) release() {
	// Report first, then free the slot: the other order lets an acquire in
	// between count one more in flight than the bound for a moment.
	if s.onRelease != nil {
		s.onRelease()
	}
	<-s.slots
}

// dispatch queues job behind every earlier job of the same key and runs it
// when they are done; an empty key has no order and runs at once. It never
// blocks. The slot taken by acquire is released after job returns.
func (s *scheduler) dispatch(key []byte, job func()) {
	if len(key) == 0 {
		s.start(keyRun{one: job})
		return
	}
	s.mu.Lock()
	if q, ok := s.keys[string(key)]; ok {
		q.jobs = append(q.jobs, job)
		s.mu.Unlock()
		return
	}
	k := string(key)
	q := &keyQueue{jobs: []func(){job}}
	s.keys[k] = q
	s.mu.Unlock()
	s.start(keyRun{key: k, q: q})
}

// start hands r to a parked worker, or starts a worker for it. It never
// blocks.
func (s *scheduler) start(r keyRun) {
	select {
	case s.handoff <- r:
	default:
		s.started.Add(1)
		go s.worker(r)
	}
}

// worker runs r, then parks for the next run until workerIdle passes
// without one.
func (s *scheduler) worker(r keyRun) {
	var idle *time.Timer
	for {
		if r.q != nil {
			s.runKey(r.key, r.q)
		} else {
			r.one()
			s.release()
		}
		if idle == nil {
			idle = time.NewTimer(workerIdle)
		} else {
			idle.Reset(workerIdle) // Go ≥ 1.23: no stale tick survives Reset
		}
		select {
		case r = <-s.handoff:
		case <-idle.C:
			return
		}
	}
}

// runKey drains one key's queue. The map entry is removed under the same
// lock that finds the queue empty, so a job dispatched concurrently either
// lands in this queue before the check or starts a new run after it.
func (s *scheduler) runKey(key string, q *keyQueue) {
	for {
		s.mu.Lock()
		if q.next == len(q.jobs) {
			delete(s.keys, key)
			s.mu.Unlock()
			return
		}
		job := q.jobs[q.next]
		q.jobs[q.next] = nil
		q.next++
		if q.next == len(q.jobs) {
			// Reuse the backing array instead of letting it creep forward.
			q.jobs, q.next = q.jobs[:0], 0
		}
		s.mu.Unlock()
		job()
		s.release()
	}
}

// activeKeys is the number of keys being run (for tests).
func (s *scheduler) activeKeys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}
