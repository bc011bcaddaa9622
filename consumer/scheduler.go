package consumer

import (
	"context"
	"sync"
)

// scheduler runs jobs concurrently across keys and strictly one after another
// within a key, in submission order. A key has a goroutine only while it has
// queued work: the goroutine exits when its queue empties. acquire bounds the
// jobs admitted and not yet finished to the slot count, so goroutines and
// queued jobs never exceed it.
type scheduler struct {
	slots chan struct{}

	mu   sync.Mutex
	keys map[string]*keyQueue

	// onAcquire and onRelease observe the in-flight count (metrics); they
	// may be nil.
	onAcquire, onRelease func()
}

type keyQueue struct {
	jobs []func()
	next int
}

func newScheduler(slots int) *scheduler {
	return &scheduler{slots: make(chan struct{}, slots), keys: make(map[string]*keyQueue)}
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
		go s.runOne(job)
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
	go s.runKey(k, q)
}

func (s *scheduler) runOne(job func()) {
	job()
	s.release()
}

// runKey drains one key's queue. The map entry is removed under the same
// lock that finds the queue empty, so a job dispatched concurrently either
// lands in this queue before the check or starts a new goroutine after it.
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

// activeKeys is the number of keys with a running goroutine (for tests).
func (s *scheduler) activeKeys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}
