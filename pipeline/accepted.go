package pipeline

import "sync"

// acceptedSet remembers, in this process, the postbacks a partner accepted
// whose delivered mark has not reached Redis yet. While Redis is away the
// claim that guards a postback can lapse; without this memory a redelivery
// of the same event (a retry, or a rebalance that hands the partition back
// to this process) would take the lapsed claim and send again. With it, the
// redelivery waits for the mark instead: fail closed, the click waits and
// nothing is sent twice. The memory is lost with the process: a crash
// between the partner's answer and the mark is the documented duplicate
// window, which the partner's transaction_id covers.
type acceptedSet struct {
	mu sync.Mutex
	m  map[string]chan struct{} // postback id → closed when marked
}

func newAcceptedSet() *acceptedSet { return &acceptedSet{m: make(map[string]chan struct{})} }

// add records that postbackID was accepted and returns the function that
// forgets it once its mark landed (waking whoever waits for it).
func (s *acceptedSet) add(postbackID string) (marked func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.m[postbackID]
	if !ok {
		ch = make(chan struct{})
		s.m[postbackID] = ch
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.m[postbackID] == ch {
			delete(s.m, postbackID)
			close(ch)
		}
	}
}

// pending returns a channel closed once postbackID's mark lands, or nil when
// this process knows of no unmarked acceptance of it.
func (s *acceptedSet) pending(postbackID string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[postbackID]
}

// len is the number of accepted postbacks still waiting for their mark.
func (s *acceptedSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
