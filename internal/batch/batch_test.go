package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackd/postbackd/internal/testinfra"
)

func TestCoalescerResultsInOrder(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	c := New(func(_ context.Context, reqs []int) ([]int, error) {
		mu.Lock()
		sizes = append(sizes, len(reqs))
		mu.Unlock()
		out := make([]int, len(reqs))
		for i, r := range reqs {
			out[i] = r * 2
		}
		return out, nil
	}, Options{Max: 16, Concurrency: 2})
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := c.Do(context.Background(), i)
			if err != nil || got != i*2 {
				t.Errorf("Do(%d) = %d, %v; want %d", i, got, err, i*2)
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, s := range sizes {
		if s > 16 {
			t.Fatalf("batch of %d exceeds Max 16", s)
		}
		total += s
	}
	if total != 500 {
		t.Fatalf("executed %d requests, want 500", total)
	}
}

// While one batch is blocked, calls queue and leave together in the next.
func TestCoalescerBatchesWhileBusy(t *testing.T) {
	release := make(chan struct{})
	sizes := make(chan int, 10)
	c := New(func(_ context.Context, reqs []string) ([]string, error) {
		sizes <- len(reqs)
		if reqs[0] == "first" {
			<-release
		}
		return reqs, nil
	}, Options{Max: 100, Concurrency: 1})
	defer c.Close()
	go func() { _, _ = c.Do(context.Background(), "first") }()
	if n := <-sizes; n != 1 {
		t.Fatalf("first batch has %d calls, want 1", n)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = c.Do(context.Background(), "next") }()
	}
	// Wait until all ten are queued behind the blocked batch.
	testinfra.WaitUntil(t, 5*time.Second, "10 calls queued", func() bool { return len(c.queue) >= 10 })
	close(release)
	wg.Wait()
	if n := <-sizes; n != 10 {
		t.Fatalf("second batch has %d calls, want all 10 queued ones", n)
	}
}

func TestCoalescerErrorReachesEveryCaller(t *testing.T) {
	boom := errors.New("boom")
	c := New(func(context.Context, []int) ([]int, error) { return nil, boom }, Options{})
	defer c.Close()
	if _, err := c.Do(context.Background(), 1); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

// A batch that fails is re-run request by request: only the bad one fails.
func TestCoalescerIsolatesABadRequest(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	c := New(func(_ context.Context, reqs []int) ([]int, error) {
		if reqs[0] == 0 {
			// Only the first batch blocks; a rerun of request 0 on its own
			// (after the batch with the bad requests failed) passes through.
			select {
			case started <- struct{}{}:
				<-release
			default:
			}
		}
		for _, r := range reqs {
			if r < 0 {
				return nil, errors.New("negative")
			}
		}
		return reqs, nil
	}, Options{Concurrency: 1})
	defer c.Close()
	go func() { _, _ = c.Do(context.Background(), 0) }()
	<-started
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range 5 {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = c.Do(context.Background(), i-2) }()
	}
	testinfra.WaitUntil(t, 5*time.Second, "5 calls queued", func() bool { return len(c.queue) >= 5 })
	close(release)
	wg.Wait()
	for i, err := range errs {
		if (i-2 < 0) != (err != nil) {
			t.Errorf("request %d: err = %v", i-2, err)
		}
	}
}

func TestCoalescerClosed(t *testing.T) {
	c := New(func(_ context.Context, r []int) ([]int, error) { return r, nil }, Options{})
	c.Close()
	c.Close()
	if _, err := c.Do(context.Background(), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

// TestCoalescerCloseAnswersEveryCall holds Close to its contract while
// calls are in every state: one in a batch that is executing, some queued,
// some waiting for room in a full queue, some arriving during Close. Each
// caller gets its result or ErrClosed; none is left waiting.
func TestCoalescerCloseAnswersEveryCall(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	c := New(func(_ context.Context, r []int) ([]int, error) {
		once.Do(func() { close(started); <-release })
		return r, nil
	}, Options{Max: 2, Concurrency: 1}) // room for 2 queued calls
	var wg sync.WaitGroup
	errs := make([]error, 8)
	call := func(i int) {
		defer wg.Done()
		var got int
		got, errs[i] = c.Do(context.Background(), i)
		if errs[i] == nil && got != i {
			errs[i] = fmt.Errorf("result %d, want %d", got, i)
		}
	}
	wg.Add(1)
	go call(0)
	<-started
	for i := 1; i < 6; i++ { // two queued, three waiting for room
		wg.Add(1)
		go call(i)
	}
	testinfra.WaitUntil(t, 5*time.Second, "the queue full", func() bool { return len(c.queue) == cap(c.queue) })
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	for i := 6; i < 8; i++ { // during Close
		wg.Add(1)
		go call(i)
	}
	close(release)
	<-closed
	wg.Wait()
	if errs[0] != nil {
		t.Errorf("the executing call: %v, want its result", errs[0])
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("call %d: %v, want its result or ErrClosed", i, err)
		}
	}
	if _, err := c.Do(context.Background(), 9); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}

// TestCoalescerRecyclesOnlyAnsweredCalls runs many callers, some giving
// up before their answer, against batches that take a while: a call is
// reused only once its caller took the answer, so every answer that
// arrives is the caller's own, and answering an abandoned call never holds
// up the loop.
func TestCoalescerRecyclesOnlyAnsweredCalls(t *testing.T) {
	c := New(func(_ context.Context, r []int) ([]int, error) {
		time.Sleep(50 * time.Microsecond) // a batch's round trip, so that callers give up in every state
		out := make([]int, len(r))
		for i, v := range r {
			out[i] = -v
		}
		return out, nil
	}, Options{Max: 16, Concurrency: 1})
	// Closed at the end only: Close waits for a loop that may be stuck.
	var wg sync.WaitGroup
	var wrong, answered atomic.Int64
	for g := range 64 {
		wg.Go(func() {
			for i := range 200 {
				req := g*1000 + i
				ctx, cancel := context.WithCancel(context.Background())
				switch i % 3 {
				case 0: // gives up before the call is queued
					cancel()
				case 1: // gives up while queued or in a batch, or not at all
					time.AfterFunc(time.Duration(i%7)*20*time.Microsecond, cancel)
				}
				got, err := c.Do(ctx, req)
				cancel()
				if err == nil {
					answered.Add(1)
					if got != -req {
						wrong.Add(1)
					}
				} else if !errors.Is(err, context.Canceled) {
					t.Errorf("request %d: %v", req, err)
				}
			}
		})
	}
	waitCallers(t, &wg, "a loop blocked answering a call, or a call went unanswered")
	if wrong.Load() != 0 {
		t.Fatalf("%d of %d answers were another call's", wrong.Load(), answered.Load())
	}
	if never := int64(64 * 66); answered.Load() < never { // i%3 == 2
		t.Fatalf("only %d calls answered, want at least the %d never cancelled", answered.Load(), never)
	}
	c.Close()
}

// TestCoalescerCloseRunsNothingNew closes the coalescer while a batch of
// four hangs in the backend, four more calls are queued and a ninth waits
// for room: the batch in progress ends at its Timeout, and nothing runs
// after Close has begun — not the failed batch's calls one by one, not the
// queued ones — so Close returns within about one Timeout and every caller
// gets ErrClosed.
func TestCoalescerCloseRunsNothingNew(t *testing.T) {
	var closing atomic.Bool
	var runs, late atomic.Int64
	c := New(func(ctx context.Context, r []int) ([]int, error) {
		runs.Add(1)
		if closing.Load() {
			late.Add(1)
		}
		<-ctx.Done() // a backend that never answers: each run ends at Timeout
		return nil, ctx.Err()
	}, Options{Max: 4, Concurrency: 1, Timeout: 50 * time.Millisecond})
	var wg sync.WaitGroup
	errs := make([]error, 10)
	do := func(i int) {
		wg.Go(func() { _, errs[i] = c.Do(context.Background(), i) })
	}
	do(0)
	testinfra.WaitUntil(t, 5*time.Second, "call 0 running", func() bool { return runs.Load() == 1 })
	for i := 1; i <= 4; i++ {
		do(i)
	}
	testinfra.WaitUntil(t, 5*time.Second, "calls 1-4 running as one batch", func() bool { return runs.Load() == 2 })
	for i := 5; i <= 9; i++ { // four queued, the ninth waiting for room
		do(i)
	}
	testinfra.WaitUntil(t, 5*time.Second, "the queue full", func() bool { return len(c.queue) == cap(c.queue) })
	closing.Store(true)
	c.Close()
	waitCallers(t, &wg, "Close returned before answering them")
	if n := late.Load(); n != 0 {
		t.Errorf("%d backend runs began after Close, want none", n)
	}
	if !errors.Is(errs[0], context.DeadlineExceeded) {
		t.Errorf("call 0: %v, want its batch's timeout", errs[0])
	}
	for i := 1; i <= 9; i++ {
		if !errors.Is(errs[i], ErrClosed) {
			t.Errorf("call %d: %v, want ErrClosed", i, errs[i])
		}
	}
}

// TestCoalescerDoDuringClose calls Do while Close waits for a batch that
// does not end (its backend ignores its context) and a caller waits for
// room: the new call returns ErrClosed, or its own context's error, at
// once, not when the batch ends.
func TestCoalescerDoDuringClose(t *testing.T) {
	release := make(chan struct{})
	var runs atomic.Int64
	c := New(func(_ context.Context, r []int) ([]int, error) {
		runs.Add(1)
		<-release
		return r, nil
	}, Options{Max: 1, Concurrency: 1})
	var wg sync.WaitGroup
	for i := range 3 { // one running, one queued, one waiting for room
		wg.Go(func() { _, _ = c.Do(context.Background(), i) })
		if i == 0 {
			testinfra.WaitUntil(t, 5*time.Second, "call 0 running", func() bool { return runs.Load() == 1 })
		}
	}
	testinfra.WaitUntil(t, 5*time.Second, "the queue full", func() bool { return len(c.queue) == cap(c.queue) })
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-c.done: // Close has begun
	case <-time.After(10 * time.Second):
		t.Fatal("Close has not begun after 10 s: it waits for the caller waiting for room")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { _, err := c.Do(ctx, 9); res <- err }()
	select {
	case err := <-res:
		if !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled) {
			t.Errorf("Do during Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		cancel()
		t.Error("Do during Close still waiting after 10 s, while the batch in progress has not ended")
	}
	close(release)
	<-closed
	wg.Wait()
}

// TestCoalescerCloseDuringFallback closes the coalescer while a batch of
// two is failing and two calls are queued: the failed batch's calls are
// not run again one by one (Close has begun), the queued ones are not run
// at all, and each of the four gets ErrClosed, once.
func TestCoalescerCloseDuringFallback(t *testing.T) {
	const blocker = -1 // runs alone first, so that calls 0 and 1 queue together
	unblock, fail := make(chan struct{}), make(chan struct{})
	var runs, late atomic.Int64
	var c *Coalescer[int, int]
	c = New(func(_ context.Context, r []int) ([]int, error) {
		runs.Add(1)
		select {
		case <-c.done:
			late.Add(1)
		default:
		}
		switch {
		case r[0] == blocker:
			<-unblock
		case len(r) > 1:
			<-fail
			return nil, errors.New("the batch fails")
		}
		return r, nil
	}, Options{Max: 2, Concurrency: 1})
	var wg sync.WaitGroup
	var blockerErr error
	wg.Go(func() { _, blockerErr = c.Do(context.Background(), blocker) })
	testinfra.WaitUntil(t, 5*time.Second, "the blocker running", func() bool { return runs.Load() == 1 })
	errs := make([]error, 4)
	do := func(i int) { wg.Go(func() { _, errs[i] = c.Do(context.Background(), i) }) }
	do(0)
	do(1)
	testinfra.WaitUntil(t, 5*time.Second, "calls 0 and 1 queued", func() bool { return len(c.queue) == 2 })
	close(unblock)
	testinfra.WaitUntil(t, 5*time.Second, "calls 0 and 1 running as one batch", func() bool { return runs.Load() == 2 })
	do(2)
	do(3)
	testinfra.WaitUntil(t, 5*time.Second, "calls 2 and 3 queued", func() bool { return len(c.queue) == 2 })
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	<-c.done // Close has begun
	close(fail)
	<-closed
	wg.Wait()
	if blockerErr != nil {
		t.Errorf("the blocker: %v", blockerErr)
	}
	if n := late.Load(); n != 0 {
		t.Errorf("%d backend runs began after Close, want none", n)
	}
	for i, err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("call %d: %v, want ErrClosed", i, err)
		}
	}
}

func TestCoalescerCallerContext(t *testing.T) {
	block := make(chan struct{})
	c := New(func(_ context.Context, r []int) ([]int, error) { <-block; return r, nil }, Options{Concurrency: 1})
	defer c.Close()
	defer close(block)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Do(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func BenchmarkCoalescer(b *testing.B) {
	c := New(func(_ context.Context, r []int) ([]int, error) { return r, nil }, Options{})
	defer c.Close()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = c.Do(context.Background(), 1)
		}
	})
}

// BenchmarkCoalescerInFlight is the coalescer as postbackd uses it: one
// batch at a time, hundreds of callers in flight sharing one cancellable
// context (a consumer session's), so every waiter also waits on the same
// Done channel.
func BenchmarkCoalescerInFlight(b *testing.B) {
	c := New(func(_ context.Context, r []int) ([]int, error) { return r, nil }, Options{Max: 256, Concurrency: 1})
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.SetParallelism(256)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = c.Do(ctx, 1)
		}
	})
}

// waitCallers waits for the callers of wg, failing the test if they are
// still waiting after 10 s (why names the bug that would keep them).
func waitCallers(t *testing.T, wg *sync.WaitGroup, why string) {
	t.Helper()
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatalf("callers still waiting after 10 s: %s", why)
	}
}
