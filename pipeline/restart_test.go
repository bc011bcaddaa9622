package pipeline_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/record"
)

// TestStopDuringSend stops a service while the tracker holds one postback,
// then starts a second instance (same group, same Redis prefix) and checks
// what reached the tracker in total. Two cases, both deterministic:
//
//   - drain: the held request is answered during the stop's drain, so the
//     postback is marked delivered before the process ends: the second
//     instance sends nothing for it, whether or not the offset was committed.
//   - cut: the drain times out first and the request runs to the partner's
//     timeout without an answer; the tracker accepts it only after that, so
//     nothing marks it delivered: the second instance sends it again, with
//     the same transaction_id — the duplicate window of an answer that never
//     came, which pipeline's documentation admits, for the partner to drop.
//
// In both, every other postback reaches the tracker exactly once.
func TestStopDuringSend(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		drain time.Duration
		// releaseAfterStop answers the held request only once the first
		// instance has stopped (the drain ran out); otherwise right after
		// the stop begins (the drain waits for it).
		releaseAfterStop bool
		heldSends        int // accepted requests of the held postback in total
	}{
		{name: "drain", drain: 10 * time.Second, heldSends: 1},
		{name: "cut", drain: 300 * time.Millisecond, releaseAfterStop: true, heldSends: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const held = "held"
			var heldTx string
			var mu sync.Mutex
			h := newHarness(t, harnessOptions{drain: tc.drain, noStart: true, duplicatesAllowed: func(tx string) bool {
				mu.Lock()
				defer mu.Unlock()
				return tc.heldSends > 1 && tx == heldTx
			}})
			release := make(chan struct{})
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			defer unblock()
			arrived := make(chan struct{}, 1)
			var first sync.Once
			h.onClick(held, func(r *http.Request) (int, string) {
				holds := false
				first.Do(func() {
					holds = true
					mu.Lock()
					heldTx = r.URL.Query().Get("transaction_id")
					mu.Unlock()
				})
				if holds {
					arrived <- struct{}{}
					<-release
				}
				return http.StatusOK, "OK"
			})

			// Phase 1: FTDs of four clicks; the tracker holds the first
			// request of "held".
			in1 := h.start()
			others := []string{"other-1", "other-2", "other-3"}
			var msgs []kafka.Message
			for _, c := range others {
				m, _ := h.msg(h.topics.Deposits, c, deposit("casino", "10", "EUR", "succeeded"))
				msgs = append(msgs, m)
			}
			h.produce(t, msgs...)
			// Everything else is finished before the held postback is sent,
			// so it is the only work in flight when the stop comes. In the
			// drain case it is held only briefly (well inside the partner's
			// timeout, whose quick retry would be a second request); in the
			// cut case past that timeout, by a stop that no longer retries.
			for _, c := range others {
				h.waitAudits(t, "FTD of "+c, 1, and(byClick(c), sent))
			}
			heldMsg, heldID := h.msg(h.topics.Deposits, held, deposit("casino", "10", "EUR", "succeeded"))
			h.produce(t, heldMsg)
			select {
			case <-arrived:
			case <-time.After(waitTimeout):
				t.Fatal("the held postback never reached the tracker")
			}
			if tc.releaseAfterStop {
				h.stop(in1)
				if got := h.col.audits(byEvent(heldID)); len(got) != 0 {
					t.Fatalf("an outcome was recorded for the unanswered send: %+v", got)
				}
				unblock()
				h.waitAccepted(t, held, 1) // the partner did take it
			} else {
				in1.cancel()
				unblock()
				h.stop(in1)
				// Delivered and audited within the drain, by the first instance.
				h.waitAudits(t, "the held FTD's delivery", 1, and(byEvent(heldID), sent))
			}

			// Phase 2: a second instance, and a deposit more per click.
			var more []kafka.Message
			for _, c := range append([]string{held}, others...) {
				m, _ := h.msg(h.topics.Deposits, c, deposit("casino", "5", "EUR", "succeeded"))
				more = append(more, m)
			}
			newcomer, newID := h.msg(h.topics.Deposits, "newcomer", deposit("casino", "10", "EUR", "succeeded"))
			more = append(more, newcomer)
			h.produce(t, more...)
			h.start()
			h.waitAudits(t, "newcomer's FTD", 1, and(byEvent(newID), sent))
			for _, c := range append([]string{held, "newcomer"}, others...) {
				h.barrier(t, "casino", c)
			}

			heldReqs := h.accepted(held)
			ftds := 0
			for _, r := range heldReqs {
				if r.Query.Get("goal_alias") == "ftd" {
					ftds++
					if tx := r.Query.Get("transaction_id"); tx != heldTx {
						t.Errorf("the held FTD was sent with transaction_id %s and %s", heldTx, tx)
					}
				}
			}
			if ftds != tc.heldSends {
				t.Errorf("the held FTD reached the tracker %d times, want %d:%s", ftds, tc.heldSends, describe(heldReqs))
			}
			if got := h.col.audits(and(byEvent(heldID), sent)); len(got) != 1 {
				t.Errorf("want one delivered (not replayed) record of the held FTD, got %+v", got)
			}
			for _, c := range append([]string{held, "newcomer"}, others...) {
				var goals []string
				for _, r := range h.accepted(c) {
					goals = append(goals, r.Query.Get("goal_alias"))
				}
				want := "[ftd rdep]"
				switch c {
				case "newcomer":
					want = "[ftd]"
				case held:
					want = fmt.Sprint(append(repeat("ftd", tc.heldSends), "rdep"))
				}
				if fmt.Sprint(goals) != want {
					t.Errorf("click %s: tracker accepted %v, want %s", c, goals, want)
				}
			}
			for _, a := range h.col.audits(func(a record.Audit) bool {
				return a.Outcome != record.OutcomeDelivered && a.Outcome != record.OutcomeSkipped
			}) {
				t.Errorf("unexpected outcome %+v", a)
			}
		})
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
