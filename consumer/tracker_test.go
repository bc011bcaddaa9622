package consumer

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	tests := []struct {
		name    string
		offsets []int64 // added in this order
		done    []int   // indexes into offsets, completed in this order
		want    []int64 // commitOffset after each done
	}{
		{"in order", []int64{0, 1, 2}, []int{0, 1, 2}, []int64{1, 2, 3}},
		{"reverse", []int64{0, 1, 2}, []int{2, 1, 0}, []int64{-1, -1, 3}},
		{"middle first", []int64{10, 11, 12, 13}, []int{1, 0, 3, 2}, []int64{-1, 12, 12, 14}},
		{"gaps in offsets", []int64{5, 9, 20}, []int{0, 2, 1}, []int64{6, 6, 21}},
		{"head stuck", []int64{0, 1, 2, 3}, []int{1, 2, 3}, []int64{-1, -1, -1}},
		{"done twice", []int64{0, 1}, []int{0, 0, 1}, []int64{1, 1, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker(0)
			seqs := make([]uint64, len(tc.offsets))
			for i, o := range tc.offsets {
				seqs[i] = tr.add(o)
			}
			for i, d := range tc.done {
				tr.done(seqs[d])
				if got := tr.commitOffset(); got != tc.want[i] {
					t.Fatalf("after done #%d (offset %d): commit offset %d, want %d", i, tc.offsets[d], got, tc.want[i])
				}
			}
		})
	}
}

// TestTrackerLargeWindow completes a large window in random order (growing
// the ring many times) and checks the commit offset is always exactly one
// past the longest finished prefix.
func TestTrackerLargeWindow(t *testing.T) {
	const n = 100_000
	tr := newTracker(0)
	seqs := make([]uint64, n)
	for i := range n {
		seqs[i] = tr.add(int64(1000 + 2*i)) // gaps of one offset
	}
	finished := make([]bool, n)
	prefix := 0
	for step, i := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
		tr.done(seqs[i])
		finished[i] = true
		for prefix < n && finished[prefix] {
			prefix++
		}
		want := int64(-1)
		if prefix > 0 {
			want = int64(1000+2*(prefix-1)) + 1
		}
		if step%997 == 0 || step == n-1 {
			if got := tr.commitOffset(); got != want {
				t.Fatalf("step %d: commit offset %d, want %d", step, got, want)
			}
		}
	}
	if got := tr.pending(); got != 0 {
		t.Fatalf("pending %d after all done, want 0", got)
	}
	// The ring is reused after a full drain: adding more keeps working.
	s := tr.add(1_000_000)
	tr.done(s)
	if got := tr.commitOffset(); got != 1_000_001 {
		t.Fatalf("commit offset %d after reuse, want 1000001", got)
	}
}

// TestTrackerWaitRoom checks that a stuck head blocks further fetching once
// the window is full, and that finishing it frees the room.
func TestTrackerWaitRoom(t *testing.T) {
	tr := newTracker(3)
	head := tr.add(0)
	for o := int64(1); o < 3; o++ {
		tr.done(tr.add(o))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := tr.waitRoom(ctx); err == nil {
		t.Fatal("waitRoom returned with a full window")
	}
	released := make(chan error, 1)
	go func() { released <- tr.waitRoom(context.Background()) }()
	tr.done(head)
	select {
	case err := <-released:
		if err != nil {
			t.Fatalf("waitRoom: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitRoom still blocked after the head finished")
	}
	if got := tr.commitOffset(); got != 3 {
		t.Fatalf("commit offset %d, want 3", got)
	}
}

func BenchmarkTracker(b *testing.B) {
	tr := newTracker(0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tr.done(tr.add(int64(i)))
	}
}
