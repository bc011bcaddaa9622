package consumer

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackd/postbackd/internal/testinfra"
)

// TestSchedulerKeyOrder submits interleaved jobs of many keys and checks each
// key's jobs ran in submission order and never overlapped.
func TestSchedulerKeyOrder(t *testing.T) {
	tests := []struct {
		name  string
		slots int
		keys  int
		jobs  int
	}{
		{"one slot", 1, 10, 500},
		{"few slots", 4, 50, 5000},
		{"many slots", 256, 20, 5000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newScheduler(tc.slots)
			var mu sync.Mutex
			got := map[string][]int{}
			running := map[string]bool{}
			var overlap atomic.Bool
			var wg sync.WaitGroup
			for i := range tc.jobs {
				key := fmt.Sprintf("k%d", i%tc.keys)
				if err := s.acquire(context.Background()); err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				s.dispatch([]byte(key), func() {
					defer wg.Done()
					mu.Lock()
					if running[key] {
						overlap.Store(true)
					}
					running[key] = true
					mu.Unlock()
					time.Sleep(time.Duration(i%3) * time.Microsecond) // vary job length to shuffle keys
					mu.Lock()
					running[key] = false
					got[key] = append(got[key], i)
					mu.Unlock()
				})
			}
			wg.Wait()
			if overlap.Load() {
				t.Fatal("two jobs of one key ran at the same time")
			}
			for k, seq := range got {
				for j := 1; j < len(seq); j++ {
					if seq[j] <= seq[j-1] {
						t.Fatalf("key %s ran job %d after %d", k, seq[j], seq[j-1])
					}
				}
			}
			total := 0
			for _, seq := range got {
				total += len(seq)
			}
			if total != tc.jobs {
				t.Fatalf("%d jobs ran, want %d", total, tc.jobs)
			}
			waitUntil(t, 5*time.Second, func() bool { return s.activeKeys() == 0 }, "key goroutines exit")
		})
	}
}

// TestSchedulerKeysConcurrent proves different keys run at the same time: two
// jobs of different keys must both reach a barrier before either may leave.
func TestSchedulerKeysConcurrent(t *testing.T) {
	s := newScheduler(8)
	var barrier sync.WaitGroup
	barrier.Add(2)
	passed := make(chan struct{}, 2)
	for _, key := range []string{"a", "b"} {
		if err := s.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.dispatch([]byte(key), func() {
			barrier.Done()
			barrier.Wait()
			passed <- struct{}{}
		})
	}
	for range 2 {
		select {
		case <-passed:
		case <-time.After(5 * time.Second):
			t.Fatal("keys a and b did not run concurrently")
		}
	}
}

// TestSchedulerSameKeyNotConcurrent: a second job of one key must not start
// while the first is blocked.
func TestSchedulerSameKeyNotConcurrent(t *testing.T) {
	s := newScheduler(8)
	release := make(chan struct{})
	second := make(chan struct{})
	for _, job := range []func(){func() { <-release }, func() { close(second) }} {
		if err := s.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.dispatch([]byte("k"), job)
	}
	select {
	case <-second:
		t.Fatal("second job of key k started while the first was running")
	case <-time.After(100 * time.Millisecond): // proving absence needs a bounded look
	}
	close(release)
	select {
	case <-second:
	case <-time.After(5 * time.Second):
		t.Fatal("second job never ran")
	}
}

// TestSchedulerInFlightBound submits many more jobs than slots while the
// jobs are held on a gate: the count of admitted, unfinished jobs must reach
// the slot count, never pass it, and the submitter must block there.
func TestSchedulerInFlightBound(t *testing.T) {
	const slots, jobs = 16, 2000
	s := newScheduler(slots)
	var cur, peak, submitted atomic.Int64
	s.onAcquire = func() {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
	}
	s.onRelease = func() { cur.Add(-1) }
	gate := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(jobs)
	go func() {
		for i := range jobs {
			if err := s.acquire(context.Background()); err != nil {
				t.Error(err)
				return
			}
			submitted.Add(1)
			var key []byte
			if i%5 != 0 { // every fifth has no key
				key = fmt.Appendf(nil, "k%d", i%37)
			}
			s.dispatch(key, func() {
				defer wg.Done()
				<-gate
			})
		}
	}()
	waitUntil(t, 5*time.Second, func() bool { return submitted.Load() == slots }, "slots filled")
	// The submitter is now blocked in acquire; it must stay there.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.acquire(ctx); err == nil {
		t.Fatal("acquire succeeded with every slot taken")
	}
	if n := submitted.Load(); n != slots {
		t.Fatalf("%d jobs admitted with %d slots", n, slots)
	}
	close(gate)
	wg.Wait()
	waitUntil(t, 5*time.Second, func() bool { return cur.Load() == 0 }, "all slots released")
	if p := peak.Load(); p != slots {
		t.Fatalf("peak in flight %d, want exactly %d", p, slots)
	}
	waitUntil(t, 5*time.Second, func() bool { return s.activeKeys() == 0 }, "key goroutines exit")
}

func waitUntil(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	testinfra.WaitUntil(t, d, what, cond)
}

// TestSchedulerReusesWorkers: keys that start one after another are run by
// the same parked worker (no goroutine per key), and idle workers exit.
func TestSchedulerReusesWorkers(t *testing.T) {
	s := newScheduler(8)
	before := runtime.NumGoroutine()
	runs := 0
	run := func(key string) {
		if err := s.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		s.dispatch([]byte(key), func() { close(done) })
		<-done
		runs++
		waitUntil(t, 5*time.Second, func() bool { return s.activeKeys() == 0 }, "the key's run ends")
	}
	for i := range 200 {
		run(fmt.Sprintf("k%d", i))
		if i%2 == 0 {
			run("") // a job without a key takes a worker too
		}
	}
	// A few workers are fine (a run may start before the previous worker
	// has parked); a goroutine per key would be one per run.
	if n := s.started.Load(); n > 10 {
		t.Errorf("%d workers started for %d runs one after another", n, runs)
	}
	waitUntil(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= before },
		fmt.Sprintf("idle workers exit after %s (goroutines back to %d)", workerIdle, before))
}
