// Package batch turns many concurrent single calls into few batch calls
// ("group commit"): while one batch is executing, new calls queue up, and the
// next batch takes everything queued, up to a maximum. Under low load a call
// runs alone at once (no linger, no added latency); under high load round
// trips are shared by many calls. postbackd uses it to pipeline its Redis
// scripts across the events in flight.
package batch

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrClosed is returned by Do after Close.
var ErrClosed = errors.New("batch: closed")

// Exec executes a batch. It returns one result per request, in order, or an
// error for the whole batch; the coalescer then runs each request of that
// batch alone, so that only the calls whose own request fails get an error.
type Exec[Req, Res any] func(ctx context.Context, reqs []Req) ([]Res, error)

// Coalescer batches concurrent calls of one operation. It is safe for
// concurrent use.
type Coalescer[Req, Res any] struct {
	exec    Exec[Req, Res]
	max     int
	timeout time.Duration
	queue   chan *call[Req, Res]
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	// closing guards the queue against a call queued after Close drained
	// it: Do queues under the read lock, and Close, once it has closed
	// done (which ends every wait for room in the queue), sets closed
	// under the write lock before it drains the queue. So every queued
	// call is answered — by a loop, or by Close's drain — and a waiting
	// caller needs no select on done, only on its own call and its context.
	closing sync.RWMutex
	closed  bool

	// calls recycles the calls whose caller took the answer: a call holds
	// its request and result by value, and allocating one per Do was 7 %
	// of the bytes postbackd allocates per deposit.
	calls sync.Pool
}

// call is one Do. Whoever takes it from the queue answers it exactly once
// by setting res and err and then sending on done, which has room for that
// one send, so answering never blocks (a caller that gave up never
// receives it) and done is reused with the call.
type call[Req, Res any] struct {
	req  Req
	res  Res
	err  error
	done chan struct{}
}

// answer sets cl's result and tells its caller.
func (cl *call[Req, Res]) answer(res Res, err error) {
	cl.res, cl.err = res, err
	cl.done <- struct{}{}
}

// fail answers cl with err and no result.
func (cl *call[Req, Res]) fail(err error) {
	var zero Res
	cl.answer(zero, err)
}

// Options tune a Coalescer.
type Options struct {
	// Max is the largest batch (default 128).
	Max int
	// Concurrency is how many batches may execute at once (default 4):
	// more than one keeps the pipe full while a batch is on the wire.
	Concurrency int
	// Timeout bounds one batch execution (default 10s). A batch is shared
	// by many callers, so it runs under its own deadline, not theirs.
	Timeout time.Duration
}

// New starts a coalescer; Close stops it.
func New[Req, Res any](exec Exec[Req, Res], o Options) *Coalescer[Req, Res] {
	if o.Max <= 0 {
		o.Max = 128
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	c := &Coalescer[Req, Res]{
		exec: exec, max: o.Max, timeout: o.Timeout,
		queue: make(chan *call[Req, Res], o.Max*o.Concurrency),
		done:  make(chan struct{}),
	}
	c.wg.Add(o.Concurrency)
	for range o.Concurrency {
		go c.loop()
	}
	return c
}

// Do runs req in some batch and returns its result. If ctx ends first Do
// returns ctx.Err(), but the request may still be executed: operations
// batched here must be safe to repeat.
//
// The common case costs a look at ctx, one non-blocking send and one wait
// on two channels: with hundreds of calls in flight on a shared context,
// every further case of a select is one more channel each waiter locks
// and queues on (BenchmarkCoalescerInFlight).
func (c *Coalescer[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	var zero Res
	cl, _ := c.calls.Get().(*call[Req, Res])
	if cl == nil {
		cl = &call[Req, Res]{done: make(chan struct{}, 1)}
	}
	cl.req = req
	if err := c.enqueue(ctx, cl); err != nil {
		c.recycle(cl)
		return zero, err
	}
	select {
	case <-cl.done:
		res, err := cl.res, cl.err
		c.recycle(cl)
		return res, err
	case <-ctx.Done():
		// The call stays with whoever answers it, and is not reused.
		return zero, ctx.Err()
	}
}

// recycle returns a call no one else holds to the pool, dropping what it
// refers to.
func (c *Coalescer[Req, Res]) recycle(cl *call[Req, Res]) {
	*cl = call[Req, Res]{done: cl.done}
	c.calls.Put(cl)
}

// closeBegun reports whether Close has begun.
func (c *Coalescer[Req, Res]) closeBegun() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// enqueue queues cl unless the coalescer is closed or ctx has ended (a
// caller that is gone sends nothing to the backend).
func (c *Coalescer[Req, Res]) enqueue(ctx context.Context, cl *call[Req, Res]) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	default:
	}
	c.closing.RLock()
	defer c.closing.RUnlock()
	if c.closed {
		return ErrClosed
	}
	select {
	case c.queue <- cl:
		return nil
	default:
	}
	// The queue is full: wait for room, for ctx, or for Close, which closes
	// done before it takes the write lock, so that this read lock never
	// holds it up.
	select {
	case c.queue <- cl:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

// Close stops the coalescer after the batches in progress (no batch
// starts, and no call of a failed batch is run again, once Close has
// begun); queued calls that were not taken fail with ErrClosed. So it
// returns within about one Timeout however the backend behaves. Safe to
// call twice.
func (c *Coalescer[Req, Res]) Close() {
	c.once.Do(func() {
		close(c.done)
		c.closing.Lock()
		c.closed = true
		c.closing.Unlock()
		c.wg.Wait()
		for {
			select {
			case cl := <-c.queue:
				cl.fail(ErrClosed)
			default:
				return
			}
		}
	})
}

func (c *Coalescer[Req, Res]) loop() {
	defer c.wg.Done()
	calls := make([]*call[Req, Res], 0, c.max)
	reqs := make([]Req, 0, c.max)
	for {
		select {
		case <-c.done:
			return
		case first := <-c.queue:
			calls = append(calls[:0], first)
		}
		// done and a queued call may have been ready together, and select
		// picks at random: a call taken once Close has begun is answered
		// as a queued one, not run.
		if c.closeBegun() {
			calls[0].fail(ErrClosed)
			return
		}
	fill:
		for len(calls) < c.max {
			select {
			case cl := <-c.queue:
				calls = append(calls, cl)
			default:
				break fill
			}
		}
		reqs = reqs[:0]
		for _, cl := range calls {
			reqs = append(reqs, cl.req)
		}
		res, err := c.run(reqs)
		if err != nil && len(calls) > 1 {
			// One bad request must not fail its neighbours: run each alone,
			// unless the coalescer is closing (a stop must stay bounded even
			// while the backend hangs).
			for _, cl := range calls {
				if c.closeBegun() {
					cl.fail(ErrClosed)
					continue
				}
				if r, err := c.run([]Req{cl.req}); err != nil {
					cl.fail(err)
				} else {
					cl.answer(r[0], nil)
				}
			}
			continue
		}
		// Once answered, a call may be reused by its caller's next Do: the
		// loop must not touch it again.
		for i, cl := range calls {
			if err != nil {
				cl.fail(err)
			} else {
				cl.answer(res[i], nil)
			}
		}
	}
}

func (c *Coalescer[Req, Res]) run(reqs []Req) ([]Res, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	res, err := c.exec(ctx, reqs)
	if err == nil && len(res) != len(reqs) {
		err = errors.New("batch: exec returned a result count different from the request count")
	}
	return res, err
}
