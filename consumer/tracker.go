package consumer

import (
	"context"
	"sync"
)

// tracker follows the offsets of one assigned partition from fetch to
// completion and answers which offset may be committed: one past the last
// offset of the contiguous finished prefix. Offsets must be added in fetch
// (increasing) order; gaps between them (compaction, transaction markers)
// are fine because each entry keeps its own offset.
//
// Entries live in a power-of-two ring indexed by a sequence number, so add,
// done and the prefix advance are O(1) amortised. The ring holds every entry
// from the oldest unfinished one to the newest, so its size is bounded by the
// window limit that waitRoom enforces, not by MaxInFlight: finished entries
// behind an unfinished one stay until it finishes.
type tracker struct {
	mu   sync.Mutex
	ring []trackEntry
	head uint64 // sequence number of the oldest entry not yet released
	tail uint64 // sequence number the next add gets

	committable int64 // offset to commit (last contiguous done + 1); -1 before any
	limit       int   // waitRoom blocks while tail-head >= limit (0: never)
	room        chan struct{}
}

type trackEntry struct {
	offset int64
	done   bool
}

func newTracker(limit int) *tracker {
	return &tracker{ring: make([]trackEntry, 64), committable: -1, limit: limit}
}

// add registers offset as fetched and returns the handle to pass to done.
func (t *tracker) add(offset int64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tail-t.head == uint64(len(t.ring)) {
		t.grow()
	}
	seq := t.tail
	t.ring[seq&uint64(len(t.ring)-1)] = trackEntry{offset: offset}
	t.tail++
	return seq
}

// grow doubles the ring, keeping each live entry at seq & mask of the new size.
func (t *tracker) grow() {
	bigger := make([]trackEntry, 2*len(t.ring))
	oldMask, newMask := uint64(len(t.ring)-1), uint64(len(bigger)-1)
	for s := t.head; s != t.tail; s++ {
		bigger[s&newMask] = t.ring[s&oldMask]
	}
	t.ring = bigger
}

// done marks the entry finished and advances the committable offset over
// every finished entry at the front. It reports whether the committable offset
// moved. Calling it twice for one handle, or with a handle already released,
// is a no-op.
func (t *tracker) done(seq uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq < t.head || seq >= t.tail {
		return false
	}
	mask := uint64(len(t.ring) - 1)
	t.ring[seq&mask].done = true
	moved := false
	for t.head != t.tail {
		e := &t.ring[t.head&mask]
		if !e.done {
			break
		}
		t.committable = e.offset + 1
		*e = trackEntry{}
		t.head++
		moved = true
	}
	if moved && t.room != nil && (t.limit <= 0 || int(t.tail-t.head) < t.limit) {
		close(t.room)
		t.room = nil
	}
	return moved
}

// commitOffset returns the offset to commit, or -1 when nothing has finished
// in order yet.
func (t *tracker) commitOffset() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.committable
}

// pending is the number of entries from the oldest unfinished one to the
// newest (finished or not): the window the ring holds.
func (t *tracker) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int(t.tail - t.head)
}

// waitRoom blocks while the window is at its limit, so a message stuck at
// the front of a partition pauses only that partition's fetching instead of
// growing the ring without bound. It returns ctx.Err() if ctx ends first.
func (t *tracker) waitRoom(ctx context.Context) error {
	for {
		t.mu.Lock()
		if t.limit <= 0 || int(t.tail-t.head) < t.limit {
			t.mu.Unlock()
			return nil
		}
		if t.room == nil {
			t.room = make(chan struct{})
		}
		room := t.room
		t.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
