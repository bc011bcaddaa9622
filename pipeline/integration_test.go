package pipeline_test

// Integration tests of the whole pipeline: events go in through Kafka, state
// lives in Redis, postbacks reach a local recording tracker, outcomes are
// read back from the output topics. They run on kfake and miniredis, or on a
// real Kafka and Redis when KAFKA_BROKERS / REDIS_ADDR are set.
//
// Every count asserted here is exact, and is asserted only once it is final:
// after a barrier (a later event of the same click and partition, which the
// consumer handles strictly after the ones under test) or after the outcome
// record of the last step. Besides, every harness checks at its end that no
// transaction id reached the tracker twice, that no token leaked into a log
// line or output record, and that every output record fits its JSON Schema.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/internal/tracker"
	"github.com/postbackd/postbackd/record"
)

func byClick(click string) func(record.Audit) bool {
	return func(a record.Audit) bool { return a.ClickID == click }
}

func byEvent(id string) func(record.Audit) bool {
	return func(a record.Audit) bool { return a.EventID == id }
}

// sent reports a delivered audit record that is not a replay.
func sent(a record.Audit) bool { return a.Outcome == record.OutcomeDelivered && !a.Replayed }

func and(fs ...func(record.Audit) bool) func(record.Audit) bool {
	return func(a record.Audit) bool {
		for _, f := range fs {
			if !f(a) {
				return false
			}
		}
		return true
	}
}

func goalIs(g string) func(record.Audit) bool {
	return func(a record.Audit) bool { return a.Goal == g }
}

// wantRequests asserts the accepted requests of a click, in order, each as
// path plus the query fields given (others are not compared).
func wantRequests(t *testing.T, got []tracker.Request, want ...map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("tracker accepted %d requests, want %d:%s", len(got), len(want), describe(got))
	}
	for i, w := range want {
		for k, v := range w {
			var g string
			if k == "path" {
				g = got[i].Path
			} else {
				g = got[i].Query.Get(k)
			}
			if g != v {
				t.Errorf("request %d: %s = %q, want %q (all:%s)", i, k, g, v, describe(got))
			}
		}
	}
}

func TestPipeline(t *testing.T) {
	t.Parallel()
	runPipelineSuite(t, newHarness(t, harnessOptions{}))
}

// TestPipelineOnRedisCluster runs the same suite with the service on a real
// Redis Cluster: every script's keys must share a slot, and the batched
// pipelines must split by node.
func TestPipelineOnRedisCluster(t *testing.T) {
	if os.Getenv("REDIS_CLUSTER_ADDRS") == "" {
		t.Skip("REDIS_CLUSTER_ADDRS not set: no real Redis Cluster to run the pipeline on")
	}
	t.Parallel()
	runPipelineSuite(t, newHarness(t, harnessOptions{cluster: true}))
}

func runPipelineSuite(t *testing.T, h *harness) {

	t.Run("redelivered deposit gives one FTD", func(t *testing.T) {
		t.Parallel()
		const click = "redelivered"
		m, id := h.msg(h.topics.Deposits, click, deposit("casino", "10.00", "EUR", "succeeded"))
		h.produce(t, m, m) // the same event twice, as after a producer retry
		h.barrier(t, "casino", click)

		wantRequests(t, h.accepted(click), map[string]string{"path": "/alpha/conv", "goal_alias": "ftd", "amount": "10.00"})
		audits := h.col.audits(byEvent(id))
		if len(audits) != 2 {
			t.Fatalf("got %d audit records for the event, want 2 (one delivery, one replay): %+v", len(audits), audits)
		}
		if !sent(audits[0]) || audits[0].Attempts != 1 || audits[1].Outcome != record.OutcomeDelivered || !audits[1].Replayed {
			t.Errorf("want a delivery (1 attempt) then a replayed delivery, got %+v", audits)
		}
		if audits[0].PostbackID != audits[1].PostbackID || audits[0].Goal != "ftd" || audits[1].Goal != "ftd" {
			t.Errorf("both records must be the same ftd postback: %+v", audits)
		}
	})

	t.Run("two first deposits back to back give one FTD and one RD", func(t *testing.T) {
		t.Parallel()
		const click = "two-firsts"
		m1, id1 := h.msg(h.topics.Deposits, click, deposit("casino", "20.00", "EUR", "succeeded"))
		m2, id2 := h.msg(h.topics.Deposits, click, deposit("casino", "30.00", "EUR", "succeeded"))
		h.produce(t, m1, m2)
		h.barrier(t, "casino", click)

		wantRequests(t, h.accepted(click),
			map[string]string{"goal_alias": "ftd", "amount": "20.00", "conv_status": "pending"},
			map[string]string{"goal_alias": "rdep", "amount": "30.00"})
		for id, goal := range map[string]string{id1: "ftd", id2: "rdep"} {
			if got := h.col.audits(and(byEvent(id), sent)); len(got) != 1 || got[0].Goal != goal {
				t.Errorf("event %s: want one delivered %s, got %+v", id, goal, got)
			}
		}
	})

	t.Run("FTD then RD with amounts in minor units", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			currency          string
			ftd, ftdSent      string
			rd, rdSent        string
			ftdAudit, rdAudit string
		}{
			{"EUR", "10.5", "10.50", "7", "7.00", "10.5", "7"},
			{"JPY", "1000", "1000", "250", "250", "1000", "250"},
			{"KWD", "1.5", "1.500", "0.25", "0.250", "1.5", "0.25"},
		} {
			t.Run(tc.currency, func(t *testing.T) {
				t.Parallel()
				click := "ftd-rd-" + tc.currency
				idF := h.send(t, h.topics.Deposits, click, deposit("casino", tc.ftd, tc.currency, "succeeded"))
				idR := h.send(t, h.topics.Deposits, click, deposit("casino", tc.rd, tc.currency, "succeeded"))
				h.barrier(t, "casino", click)

				wantRequests(t, h.accepted(click),
					map[string]string{"path": "/alpha/conv", "goal_alias": "ftd", "amount": tc.ftdSent, "currency": tc.currency,
						"conv_status": "pending", "token": tokens["ALPHA_TOKEN"]},
					map[string]string{"path": "/alpha/conv", "goal_alias": "rdep", "amount": tc.rdSent, "currency": tc.currency,
						"conv_status": ""})
				for id, w := range map[string][2]string{idF: {"ftd", tc.ftdAudit}, idR: {"rdep", tc.rdAudit}} {
					got := h.col.audits(and(byEvent(id), sent))
					if len(got) != 1 || got[0].Goal != w[0] || got[0].Amount != w[1] || got[0].Currency != tc.currency ||
						got[0].Network != "alpha" || got[0].HTTPStatus != http.StatusOK {
						t.Errorf("event %s: want one delivered %s of %s %s, got %+v", id, w[0], w[1], tc.currency, got)
					}
				}
			})
		}
	})

	t.Run("failed and pending deposits send nothing", func(t *testing.T) {
		t.Parallel()
		const click = "not-succeeded"
		idF := h.send(t, h.topics.Deposits, click, deposit("casino", "5.00", "EUR", "failed"))
		idP := h.send(t, h.topics.Deposits, click, deposit("casino", "6.00", "EUR", "pending"))
		idS := h.send(t, h.topics.Deposits, click, deposit("casino", "7.00", "EUR", "succeeded"))
		h.waitEventAudit(t, idS)

		for id, reason := range map[string]string{idF: "deposit_failed", idP: "deposit_pending"} {
			got := h.col.audits(byEvent(id))
			if len(got) != 1 || got[0].Outcome != record.OutcomeSkipped || got[0].Reason != reason {
				t.Errorf("event %s: want one skipped record with reason %s, got %+v", id, reason, got)
			}
		}
		// The succeeded deposit after them is the player's first: the
		// others did not count.
		wantRequests(t, h.accepted(click), map[string]string{"goal_alias": "ftd", "amount": "7.00"})
	})

	t.Run("qualification before its deposit waits for the FTD", func(t *testing.T) {
		t.Parallel()
		const click = "early-qual"
		idQ := h.send(t, h.topics.Qualifications, click, qualification("casino", "approved"))
		// A waiting qualification writes no record; its parking place in
		// Redis (dedupe's documented key layout) shows it was handled.
		parked := h.prefix + ":{c:" + click + "}:parked"
		waitUntil(t, "the qualification to be parked", func() bool {
			return h.redis.Exists(context.Background(), parked).Val() == 1
		})
		if n := len(h.attemptsFor(click)); n != 0 {
			t.Fatalf("a qualification without FTD sent %d requests", n)
		}
		idD := h.send(t, h.topics.Deposits, click, deposit("casino", "12.34", "USD", "succeeded"))
		waitUntil(t, "the confirmation", func() bool {
			return len(h.col.confirmations(func(c record.Confirmation) bool { return c.ClickID == click })) > 0
		})

		wantRequests(t, h.accepted(click),
			map[string]string{"path": "/alpha/conv", "goal_alias": "ftd", "conv_status": "pending", "amount": "12.34", "currency": "USD"},
			map[string]string{"path": "/alpha/conv-change", "goal_alias": "ftd", "conv_status": "1", "amount": "12.34", "currency": "USD"})
		h.waitAudits(t, "the status change", 1, and(byClick(click), goalIs("ftd_status")))
		h.barrier(t, "casino", click)
		st := h.col.audits(and(byClick(click), goalIs("ftd_status")))
		if len(st) != 1 || !sent(st[0]) || st[0].EventID != idQ || st[0].Status != "approved" || st[0].Source.Topic != h.topics.Qualifications {
			t.Fatalf("want one delivered ftd_status record of the qualification, got %+v", st)
		}
		confs := h.col.confirmations(func(c record.Confirmation) bool { return c.ClickID == click })
		if len(confs) != 1 {
			t.Fatalf("got %d confirmations, want 1: %+v", len(confs), confs)
		}
		c := confs[0]
		if c.Status != "approved" || c.FTDEventID != idD || c.QualificationEventID != idQ || c.Amount != "12.34" ||
			c.Currency != "USD" || c.Network != "alpha" || c.MerchantID != "casino" || c.PostbackID != st[0].PostbackID {
			t.Errorf("confirmation %+v does not match the FTD %s and qualification %s", c, idD, idQ)
		}
	})

	t.Run("approved and rejected in each partner's words", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			merchant, partner, status, word string
		}{
			{"casino", "alpha", "approved", "1"},
			{"casino", "alpha", "rejected", "0"},
			{"shop", "beta", "approved", "approved"},
			{"shop", "beta", "rejected", "rejected"},
		} {
			t.Run(tc.partner+"-"+tc.status, func(t *testing.T) {
				t.Parallel()
				click := "status-" + tc.partner + "-" + tc.status
				idD := h.send(t, h.topics.Deposits, click, deposit(tc.merchant, "40", "GBP", "succeeded"))
				h.waitAudits(t, "delivered FTD", 1, and(byEvent(idD), sent))
				idQ := h.send(t, h.topics.Qualifications, click, qualification(tc.merchant, tc.status))
				h.waitAudits(t, "status change", 1, byEvent(idQ))

				wantRequests(t, h.accepted(click),
					map[string]string{"path": "/" + tc.partner + "/conv", "conv_status": "pending"},
					map[string]string{"path": "/" + tc.partner + "/conv-change", "conv_status": tc.word, "amount": "40.00", "currency": "GBP"})
				waitUntil(t, "the confirmation", func() bool {
					return len(h.col.confirmations(func(c record.Confirmation) bool { return c.ClickID == click })) > 0
				})
				h.barrier(t, tc.merchant, click)
				confs := h.col.confirmations(func(c record.Confirmation) bool { return c.ClickID == click })
				if len(confs) != 1 {
					t.Fatalf("got %d confirmations, want 1: %+v", len(confs), confs)
				}
				c := confs[0]
				if c.Status != tc.status || c.Network != tc.partner || c.FTDEventID != idD || c.QualificationEventID != idQ {
					t.Errorf("confirmation %+v, want status %s for FTD %s", c, tc.status, idD)
				}
			})
		}
	})

	t.Run("repeated and contradicting qualifications", func(t *testing.T) {
		t.Parallel()
		const click = "requalified"
		idD := h.send(t, h.topics.Deposits, click, deposit("casino", "15", "EUR", "succeeded"))
		h.waitAudits(t, "delivered FTD", 1, and(byEvent(idD), sent))
		idQ1 := h.send(t, h.topics.Qualifications, click, qualification("casino", "approved"))
		h.waitAudits(t, "first status change", 1, byEvent(idQ1))
		idQ2 := h.send(t, h.topics.Qualifications, click, qualification("casino", "approved"))
		idQ3 := h.send(t, h.topics.Qualifications, click, qualification("casino", "rejected"))
		h.waitAudits(t, "repeat", 1, byEvent(idQ2))
		conflict := h.waitAudits(t, "conflict", 1, byEvent(idQ3))

		wantRequests(t, h.accepted(click),
			map[string]string{"path": "/alpha/conv"},
			map[string]string{"path": "/alpha/conv-change", "conv_status": "1"})
		if got := h.col.audits(and(byClick(click), goalIs("ftd_status"), sent)); len(got) != 1 || got[0].EventID != idQ1 {
			t.Errorf("want exactly one sent status change (of %s), got %+v", idQ1, got)
		}
		if got := h.col.audits(byEvent(idQ2)); len(got) != 1 || got[0].Outcome != record.OutcomeSkipped || got[0].Reason != "duplicate_qualification" {
			t.Errorf("the repeated qualification: want one skipped duplicate_qualification record, got %+v", got)
		}
		if len(conflict) != 1 || conflict[0].Outcome != record.OutcomeSkipped ||
			!strings.HasPrefix(conflict[0].Reason, "qualification_conflict") || conflict[0].Status != "rejected" {
			t.Errorf("the contradicting qualification: want one skipped qualification_conflict record, got %+v", conflict)
		}
		waitUntil(t, "the confirmation", func() bool {
			return len(h.col.confirmations(func(c record.Confirmation) bool { return c.ClickID == click })) > 0
		})
		confs := h.col.confirmations(func(c record.Confirmation) bool { return c.ClickID == click })
		if len(confs) != 1 || confs[0].Status != "approved" || confs[0].QualificationEventID != idQ1 {
			t.Errorf("want one confirmation, of the approval %s, got %+v", idQ1, confs)
		}
	})

	t.Run("revshare", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name, merchant, amount, currency string
			outcome                          record.Outcome
			reason                           string
			sentAmount                       string // URL amount when delivered
			partner                          string
		}{
			{"hybrid 35% of 100 EUR", "casino", "100", "EUR", record.OutcomeDelivered, "", "35.00", "alpha"},
			{"hybrid 35% rounds to cents", "casino", "10.01", "EUR", record.OutcomeDelivered, "", "3.50", "alpha"},
			{"hybrid 35% rounds to yen", "casino", "1001", "JPY", record.OutcomeDelivered, "", "350", "alpha"},
			{"cpa merchant", "shop", "50", "EUR", record.OutcomeSkipped, "deal_not_hybrid", "", ""},
			{"zero revenue", "casino", "0", "EUR", record.OutcomeSkipped, "zero_amount", "", ""},
			{"negative revenue", "casino", "-20", "EUR", record.OutcomeSkipped, "negative_amount", "", ""},
			{"negative revenue allowed", "neg", "-5", "EUR", record.OutcomeDelivered, "", "-5.00", "beta"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				click := "rev-" + strings.ReplaceAll(tc.name, " ", "-")
				id := h.send(t, h.topics.Revenue, click, revenue(tc.merchant, tc.amount, tc.currency))
				a := h.waitEventAudit(t, id)
				if a.Outcome != tc.outcome || a.Reason != tc.reason || a.Goal != "revshare" {
					t.Fatalf("audit %+v, want revshare %s %q", a, tc.outcome, tc.reason)
				}
				if tc.outcome != record.OutcomeDelivered {
					if n := len(h.attemptsFor(click)); n != 0 {
						t.Errorf("skipped revshare sent %d requests", n)
					}
					return
				}
				wantRequests(t, h.accepted(click), map[string]string{"path": "/" + tc.partner + "/conv",
					"goal_alias": "revshare", "amount": tc.sentAmount, "currency": tc.currency})
				if want := decimal.RequireFromString(tc.sentAmount); !decimal.RequireFromString(a.Amount).Equal(want) {
					t.Errorf("audit amount %s, want %s", a.Amount, want)
				}
			})
		}
	})

	t.Run("tracker 500 then 200 is one delivery of two attempts", func(t *testing.T) {
		t.Parallel()
		const click = "flaky-500"
		var n atomic.Int32
		h.onClick(click, func(*http.Request) (int, string) {
			if n.Add(1) == 1 {
				return http.StatusInternalServerError, "oops"
			}
			return http.StatusOK, "OK"
		})
		id := h.send(t, h.topics.Deposits, click, deposit("casino", "9", "EUR", "succeeded"))
		h.barrier(t, "casino", click)

		got := h.col.audits(byEvent(id))
		if len(got) != 1 || !sent(got[0]) || got[0].Attempts != 2 || got[0].HTTPStatus != http.StatusOK {
			t.Errorf("want one delivered record with 2 attempts, got %+v", got)
		}
		wantRequests(t, h.accepted(click), map[string]string{"goal_alias": "ftd"})
		if n := len(h.attemptsFor(click)); n != 2 {
			t.Errorf("tracker saw %d attempts, want 2", n)
		}
	})

	t.Run("tracker 400 dead-letters and the stream goes on", func(t *testing.T) {
		t.Parallel()
		const click = "refused-400"
		h.onClick(click, func(r *http.Request) (int, string) {
			if r.URL.Query().Get("amount") == "13.00" {
				return http.StatusBadRequest, "unknown click"
			}
			return http.StatusOK, "OK"
		})
		id1 := h.send(t, h.topics.Deposits, click, deposit("casino", "13", "EUR", "succeeded"))
		id2 := h.send(t, h.topics.Deposits, click, deposit("casino", "14", "EUR", "succeeded"))
		h.waitEventAudit(t, id2)

		a1 := h.col.audits(byEvent(id1))
		if len(a1) != 1 || a1[0].Outcome != record.OutcomeDeadLettered || a1[0].Reason != "postback_refused" ||
			a1[0].HTTPStatus != http.StatusBadRequest || a1[0].Attempts != 1 {
			t.Errorf("refused FTD: want one dead_lettered record (HTTP 400, 1 attempt), got %+v", a1)
		}
		waitUntil(t, "the DLQ record", func() bool {
			return len(h.col.deadLetters(func(d record.DeadLetter) bool { return d.EventID == id1 })) > 0
		})
		d := h.col.deadLetters(func(d record.DeadLetter) bool { return d.ClickID == click })
		if len(d) != 1 || d[0].Reason != "postback_refused" || d[0].EventID != id1 || d[0].Source.Topic != h.topics.Deposits ||
			d[0].Postback == nil || !strings.Contains(d[0].Error, "400") {
			t.Errorf("want one DLQ record postback_refused for %s, got %+v", id1, d)
		}
		if a2 := h.col.audits(byEvent(id2)); len(a2) != 1 || !sent(a2[0]) || a2[0].Goal != "rdep" {
			t.Errorf("the next deposit: want one delivered rdep, got %+v", a2)
		}
		wantRequests(t, h.accepted(click), map[string]string{"goal_alias": "rdep", "amount": "14.00"})
		if n := len(h.attemptsFor(click)); n != 2 {
			t.Errorf("tracker saw %d attempts, want 2 (a 400 is not retried)", n)
		}
	})

	t.Run("body-level refusal dead-letters", func(t *testing.T) {
		t.Parallel()
		const click = "refused-body"
		h.onClick(click, func(*http.Request) (int, string) { return http.StatusOK, "ERROR: click unknown" })
		id := h.send(t, h.topics.Deposits, click, deposit("body", "11", "EUR", "succeeded"))
		a := h.waitEventAudit(t, id)
		if a.Outcome != record.OutcomeDeadLettered || a.Reason != "postback_refused" || a.HTTPStatus != http.StatusOK ||
			a.Network != "gamma" || a.Attempts != 1 {
			t.Errorf("want a dead_lettered record (HTTP 200, 1 attempt), got %+v", a)
		}
		waitUntil(t, "the DLQ record", func() bool {
			return len(h.col.deadLetters(func(d record.DeadLetter) bool { return d.EventID == id })) > 0
		})
		h.barrier(t, "body", click)
		d := h.col.deadLetters(func(d record.DeadLetter) bool { return d.ClickID == click })
		if len(d) != 1 || d[0].Reason != "postback_refused" || !strings.Contains(d[0].Error, "click unknown") {
			t.Errorf("want one DLQ record postback_refused quoting the body, got %+v", d)
		}
		if n := len(h.attemptsFor(click)); n != 1 {
			t.Errorf("tracker saw %d attempts, want 1 (a refusal is not retried)", n)
		}
	})

	t.Run("tracker down beyond the quick tries: delayed path delivers once", func(t *testing.T) {
		t.Parallel()
		const click = "down-503"
		var down atomic.Bool
		down.Store(true)
		h.onClick(click, func(*http.Request) (int, string) {
			if down.Load() {
				return http.StatusServiceUnavailable, "busy"
			}
			return http.StatusOK, "OK"
		})
		id := h.send(t, h.topics.Deposits, click, deposit("casino", "21", "EUR", "succeeded"))
		failed := h.waitAudits(t, "failed attempt", 1, and(byEvent(id), func(a record.Audit) bool { return a.Outcome == record.OutcomeFailed }))
		f := failed[0]
		if f.NextAttemptAt == nil || f.LastAttempt == nil || !f.NextAttemptAt.After(*f.LastAttempt) ||
			f.Reason != "retry_scheduled" || f.HTTPStatus != http.StatusServiceUnavailable || f.Attempts != 2 {
			t.Errorf("failed record: want 2 attempts, HTTP 503 and a next attempt after the last, got %+v", f)
		}
		down.Store(false)
		del := h.waitAudits(t, "delivery", 1, and(byEvent(id), sent))
		if len(del) != 1 || del[0].Attempts != len(h.attemptsFor(click)) {
			t.Errorf("delivered record %+v: attempts must count every request the tracker saw (%d)", del, len(h.attemptsFor(click)))
		}
		wantRequests(t, h.accepted(click), map[string]string{"goal_alias": "ftd", "amount": "21.00"})
		for _, a := range h.col.audits(byEvent(id)) {
			if a.Outcome != record.OutcomeFailed && !sent(a) {
				t.Errorf("unexpected record %+v", a)
			}
		}
	})

	t.Run("malformed events are dead-lettered and the stream goes on", func(t *testing.T) {
		t.Parallel()
		const click = "malformed"
		bad := map[string]string{
			"undecodable":      `{"event_id": "m-1", "merchant_id": "casino", oops`,
			"schema_invalid":   fmt.Sprintf(`{"event_id":"m-2","occurred_at":"2026-11-24T12:00:00Z","merchant_id":"casino","click_id":%q,"currency":"EUR","status":"succeeded","player_id":"p"}`, click),
			"unknown_currency": fmt.Sprintf(`{"event_id":"m-3","occurred_at":"2026-11-24T12:00:00Z","merchant_id":"casino","click_id":%q,"amount":"5","currency":"XYZ","status":"succeeded","player_id":"p"}`, click),
		}
		for _, reason := range []string{"undecodable", "schema_invalid", "unknown_currency"} {
			m, _ := h.msg(h.topics.Deposits, click, ev{})
			m.Value = []byte(bad[reason])
			h.produce(t, m)
		}
		id := h.send(t, h.topics.Deposits, click, deposit("casino", "8", "EUR", "succeeded"))
		h.waitAudits(t, "the good deposit", 1, and(byEvent(id), sent))
		waitUntil(t, "three DLQ records", func() bool {
			return len(h.col.deadLetters(func(d record.DeadLetter) bool { return d.ClickID == click })) >= 3
		})

		dl := h.col.deadLetters(func(d record.DeadLetter) bool { return d.ClickID == click })
		if len(dl) != 3 {
			t.Fatalf("got %d DLQ records, want 3: %+v", len(dl), dl)
		}
		for _, d := range dl {
			raw, ok := bad[d.Reason]
			if !ok {
				t.Errorf("DLQ record with reason %q: %+v", d.Reason, d)
				continue
			}
			delete(bad, d.Reason)
			if d.Value != raw || d.Key != click || d.Source.Topic != h.topics.Deposits || d.Error == "" {
				t.Errorf("%s: DLQ record %+v does not carry the raw message", d.Reason, d)
			}
			if m := readInput(t, h.brokers, d.Source.Topic, d.Source.Partition, d.Source.Offset); string(m.Value) != raw {
				t.Errorf("%s: source %+v holds %q, not the dead-lettered message", d.Reason, d.Source, m.Value)
			}
			a := h.col.audits(func(a record.Audit) bool { return a.ClickID == click && a.Reason == d.Reason })
			if len(a) != 1 || a[0].Outcome != record.OutcomeDeadLettered || a[0].Source != d.Source {
				t.Errorf("%s: want one dead_lettered audit record at %+v, got %+v", d.Reason, d.Source, a)
			}
		}
		wantRequests(t, h.accepted(click), map[string]string{"goal_alias": "ftd", "amount": "8.00"})
	})

	t.Run("registration sets the partner and params of later events", func(t *testing.T) {
		t.Parallel()
		const click = "registered"
		idR := h.send(t, h.topics.Registrations, click, ev{"merchant_id": "casino", "kind": "registration", "network": "beta",
			"params": map[string]string{"custom2": "camp 7", "tr": "trID_555_aff42-tx9-clk1-zz_trID"}})
		h.waitAudits(t, "registration", 1, and(byEvent(idR), sent))
		idD := h.send(t, h.topics.Deposits, click, deposit("casino", "50", "EUR", "succeeded")) // no network: the click's
		h.waitAudits(t, "FTD", 1, and(byEvent(idD), sent))

		wantRequests(t, h.accepted(click),
			map[string]string{"path": "/beta/conv", "goal_alias": "free_reg", "affid": "aff42", "key": tokens["BETA_TOKEN"]},
			map[string]string{"path": "/beta/conv", "goal_alias": "signup", "amount": "50.00", "custom2": "camp 7",
				"affid": "aff42", "transid": "tx9", "key": tokens["BETA_TOKEN"]})
	})

	t.Run("tokens reach the tracker and nothing else", func(t *testing.T) {
		t.Parallel()
		// The tracker echoes tokens back in refusals and errors: they must
		// not travel on into the DLQ, the audit or the logs.
		echo := func(status int) hook {
			return func(r *http.Request) (int, string) {
				q := r.URL.Query()
				return status, "ERROR token " + q.Get("token") + q.Get("t") + " rejected"
			}
		}
		h.onClick("secret-400", echo(http.StatusBadRequest))
		h.onClick("secret-body", echo(http.StatusOK))
		var n atomic.Int32
		h.onClick("secret-503", func(r *http.Request) (int, string) {
			if n.Add(1) <= 3 {
				return echo(http.StatusServiceUnavailable)(r)
			}
			return http.StatusOK, "OK"
		})
		ids := []string{
			h.send(t, h.topics.Deposits, "secret-ok", deposit("casino", "1", "EUR", "succeeded")),
			h.send(t, h.topics.Deposits, "secret-400", deposit("casino", "1", "EUR", "succeeded")),
			h.send(t, h.topics.Deposits, "secret-body", deposit("body", "1", "EUR", "succeeded")),
			h.send(t, h.topics.Deposits, "secret-503", deposit("casino", "1", "EUR", "succeeded")),
		}
		for _, id := range ids {
			h.waitAudits(t, "final outcome of "+id, 1, and(byEvent(id), func(a record.Audit) bool {
				return a.Outcome == record.OutcomeDelivered || a.Outcome == record.OutcomeDeadLettered
			}))
		}
		waitUntil(t, "two DLQ records", func() bool {
			return len(h.col.deadLetters(func(d record.DeadLetter) bool { return strings.HasPrefix(d.ClickID, "secret-") })) == 2
		})
		// Proof that the check below is meaningful: the token was sent.
		wantRequests(t, h.accepted("secret-ok"), map[string]string{"token": tokens["ALPHA_TOKEN"]})
		wantRequests(t, h.accepted("secret-503"), map[string]string{"token": tokens["ALPHA_TOKEN"]})
		if got := h.attemptsFor("secret-body"); len(got) != 1 || got[0].Query.Get("t") != tokens["GAMMA_TOKEN"] {
			t.Errorf("gamma's request does not carry its token: %s", describe(got))
		}
		h.checkNoSecrets(t)
	})
}

// TestOrphanQualification: a qualification whose deposit does not come
// within the window goes to the DLQ; a deposit after that is an ordinary FTD.
func TestOrphanQualification(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{window: 300 * time.Millisecond})
	const click = "orphan"
	idQ := h.send(t, h.topics.Qualifications, click, qualification("casino", "approved"))
	waitUntil(t, "the orphan's DLQ record", func() bool {
		return len(h.col.deadLetters(func(d record.DeadLetter) bool { return d.ClickID == click })) > 0
	})
	a := h.waitEventAudit(t, idQ)

	idD := h.send(t, h.topics.Deposits, click, deposit("casino", "10", "EUR", "succeeded"))
	h.waitAudits(t, "late FTD", 1, and(byEvent(idD), sent))
	h.barrier(t, "casino", click)

	d := h.col.deadLetters(func(d record.DeadLetter) bool { return d.ClickID == click })
	if len(d) != 1 || d[0].Reason != "orphan_qualification" || d[0].EventID != idQ || d[0].EventKind != "qualification" ||
		d[0].Source.Topic != h.topics.Qualifications {
		t.Errorf("want one DLQ record orphan_qualification of %s, got %+v", idQ, d)
	}
	if got := h.col.audits(byEvent(idQ)); len(got) != 1 || a.Outcome != record.OutcomeDeadLettered || a.Reason != "orphan_qualification" {
		t.Errorf("want one dead_lettered audit record of the qualification, got %+v", got)
	}
	// The late deposit is an FTD like any other; the orphan is not resumed.
	wantRequests(t, h.accepted(click), map[string]string{"path": "/alpha/conv", "goal_alias": "ftd"})
	if c := h.col.confirmations(func(c record.Confirmation) bool { return c.ClickID == click }); len(c) != 0 {
		t.Errorf("confirmation for an orphan: %+v", c)
	}
}

// TestFailingPartnerStallsNothingElse: while partner alpha's tracker holds
// every request, partner beta's postbacks of other clicks, on the same
// partitions, are all delivered.
func TestFailingPartnerStallsNothingElse(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	arrived := make(chan string, 2)
	slow := []string{"slow-1", "slow-2"}
	for _, c := range slow {
		h.onClick(c, func(*http.Request) (int, string) {
			arrived <- c
			<-release
			return http.StatusOK, "OK"
		})
	}
	msgs := make([]kafka.Message, 0, 10)
	for _, c := range slow {
		m, _ := h.msg(h.topics.Deposits, c, deposit("casino", "10", "EUR", "succeeded"))
		msgs = append(msgs, m)
	}
	var fast []string
	for i := range 8 {
		c := fmt.Sprintf("fast-%d", i)
		fast = append(fast, c)
		m, _ := h.msg(h.topics.Deposits, c, deposit("shop", "10", "EUR", "succeeded"))
		msgs = append(msgs, m)
	}
	h.produce(t, msgs...) // alpha's first, so they are ahead of beta's on their partitions
	for range slow {
		select {
		case <-arrived:
		case <-time.After(waitTimeout):
			t.Fatal("alpha's postbacks never reached the tracker")
		}
	}
	for _, c := range fast {
		h.waitAccepted(t, c, 1)
	}
	for _, c := range slow {
		if n := len(h.accepted(c)); n != 0 {
			t.Fatalf("alpha's request of %s answered before release", c)
		}
	}
	if got := h.col.audits(func(a record.Audit) bool { return strings.HasPrefix(a.ClickID, "slow-") }); len(got) != 0 {
		t.Fatalf("alpha's postbacks have outcomes while held: %+v", got)
	}
	unblock()
	for _, c := range slow {
		got := h.waitAudits(t, "alpha's delivery", 1, and(byClick(c), sent))
		if got[0].Attempts != 1 {
			t.Errorf("%s: %d attempts, want 1", c, got[0].Attempts)
		}
		h.barrier(t, "casino", c)
		wantRequests(t, h.accepted(c), map[string]string{"path": "/alpha/conv"})
	}
	for _, c := range fast {
		h.barrier(t, "shop", c)
		wantRequests(t, h.accepted(c), map[string]string{"path": "/beta/conv", "goal_alias": "signup"})
	}
}

// TestQualificationFTDFailure: a qualification whose FTD will never be
// delivered goes to the DLQ (whether it waited for the FTD or came after
// it), and only one status change is ever sent for a click however many
// qualifications of that status wait for its FTD.
func TestQualificationFTDFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	refuse := func(*http.Request) (int, string) { return http.StatusBadRequest, "unknown click" }
	parkedKey := func(click string) string { return h.prefix + ":{c:" + click + "}:parked" }
	waitParked := func(t *testing.T, click string) {
		t.Helper()
		waitUntil(t, "the qualification to be parked", func() bool {
			return h.redis.Exists(context.Background(), parkedKey(click)).Val() == 1
		})
	}
	dlqOf := func(click string) []record.DeadLetter {
		return h.col.deadLetters(func(d record.DeadLetter) bool { return d.ClickID == click })
	}
	// wantQualDeadLettered asserts the qualification's only audit record and
	// its DLQ record.
	wantQualDeadLettered := func(t *testing.T, click, idQ string) {
		t.Helper()
		a := h.col.audits(byEvent(idQ))
		if len(a) != 1 || a[0].Outcome != record.OutcomeDeadLettered || a[0].Reason != "ftd_dead_lettered" ||
			a[0].Goal != "ftd_status" || a[0].Source.Topic != h.topics.Qualifications {
			t.Errorf("qualification %s: want one dead_lettered ftd_dead_lettered ftd_status record, got %+v", idQ, a)
		}
		var d []record.DeadLetter
		for _, r := range dlqOf(click) {
			if r.EventID == idQ {
				d = append(d, r)
			}
		}
		if len(d) != 1 || d[0].Reason != "ftd_dead_lettered" || d[0].EventKind != "qualification" ||
			d[0].Source.Topic != h.topics.Qualifications || !strings.Contains(d[0].Error, "not delivered") {
			t.Errorf("qualification %s: want one DLQ record ftd_dead_lettered, got %+v", idQ, d)
		}
	}

	t.Run("FTD refused while a qualification waits", func(t *testing.T) {
		t.Parallel()
		const click = "refused-ftd-waiting"
		h.onClick(click, refuse)
		idQ := h.send(t, h.topics.Qualifications, click, qualification("casino", "approved"))
		waitParked(t, click)
		idD := h.send(t, h.topics.Deposits, click, deposit("casino", "10", "EUR", "succeeded"))
		waitUntil(t, "two DLQ records", func() bool { return len(dlqOf(click)) >= 2 })
		h.barrier(t, "casino", click)

		d := dlqOf(click)
		if len(d) != 2 {
			t.Fatalf("got %d DLQ records, want 2 (the FTD and the qualification): %+v", len(d), d)
		}
		if a := h.col.audits(byEvent(idD)); len(a) != 1 || a[0].Outcome != record.OutcomeDeadLettered || a[0].Reason != "postback_refused" {
			t.Errorf("the FTD: want one dead_lettered postback_refused record, got %+v", a)
		}
		wantQualDeadLettered(t, click, idQ)
		// Dead-lettered, not deleted: a retry after a crash finds it again.
		if rel := h.redis.HGet(context.Background(), parkedKey(click), "released").Val(); rel != "2" {
			t.Errorf("parked record released=%q, want 2 (dead-lettered)", rel)
		}
		if got := h.attemptsFor(click); len(got) != 1 || got[0].Path != "/alpha/conv" {
			t.Errorf("want the FTD's one attempt and no status change, got%s", describe(got))
		}
	})

	t.Run("qualification after its FTD was refused", func(t *testing.T) {
		t.Parallel()
		const click = "refused-ftd-then-qual"
		h.onClick(click, refuse)
		idD := h.send(t, h.topics.Deposits, click, deposit("casino", "11", "EUR", "succeeded"))
		waitUntil(t, "the FTD's DLQ record", func() bool { return len(dlqOf(click)) >= 1 })
		idQ := h.send(t, h.topics.Qualifications, click, qualification("casino", "rejected"))
		h.waitEventAudit(t, idQ)
		// The DLQ is read apart from the audit: its record may come after
		// the qualification's audit record and the barrier's.
		waitUntil(t, "two DLQ records", func() bool { return len(dlqOf(click)) >= 2 })
		h.barrier(t, "casino", click)

		d := dlqOf(click)
		if len(d) != 2 || d[0].EventID != idD || d[0].Reason != "postback_refused" {
			t.Fatalf("want the FTD's postback_refused then the qualification's DLQ record, got %+v", d)
		}
		wantQualDeadLettered(t, click, idQ)
		if h.redis.Exists(context.Background(), parkedKey(click)).Val() != 0 {
			t.Error("the qualification was parked although its FTD had failed")
		}
		if n := len(h.attemptsFor(click)); n != 1 {
			t.Errorf("tracker saw %d attempts, want 1 (the refused FTD)", n)
		}
	})

	t.Run("a second qualification of the same status while the first waits", func(t *testing.T) {
		t.Parallel()
		const click = "two-waiting"
		idQ1 := h.send(t, h.topics.Qualifications, click, qualification("casino", "approved"))
		waitParked(t, click)
		idQ2 := h.send(t, h.topics.Qualifications, click, qualification("casino", "approved"))
		a2 := h.waitEventAudit(t, idQ2)
		if a2.Outcome != record.OutcomeSkipped || a2.Reason != "duplicate_qualification" || a2.Goal != "ftd_status" {
			t.Errorf("the second qualification: want skipped duplicate_qualification, got %+v", a2)
		}
		if a1 := h.col.audits(byEvent(idQ1)); len(a1) != 0 {
			t.Errorf("the waiting qualification has records before its FTD: %+v", a1)
		}
		idD := h.send(t, h.topics.Deposits, click, deposit("casino", "12", "EUR", "succeeded"))
		h.waitAudits(t, "the status change", 1, and(byClick(click), goalIs("ftd_status"), sent))
		waitUntil(t, "the confirmation", func() bool {
			return len(h.col.confirmations(func(c record.Confirmation) bool { return c.ClickID == click })) > 0
		})
		h.barrier(t, "casino", click)

		wantRequests(t, h.accepted(click),
			map[string]string{"path": "/alpha/conv", "goal_alias": "ftd", "conv_status": "pending"},
			map[string]string{"path": "/alpha/conv-change", "conv_status": "1", "amount": "12.00"})
		st := h.col.audits(and(byClick(click), goalIs("ftd_status"), sent))
		if len(st) != 1 || st[0].EventID != idQ1 {
			t.Errorf("want one sent status change, of %s, got %+v", idQ1, st)
		}
		if a := h.col.audits(byEvent(idQ2)); len(a) != 1 {
			t.Errorf("the second qualification: want exactly its skipped record, got %+v", a)
		}
		confs := h.col.confirmations(func(c record.Confirmation) bool { return c.ClickID == click })
		if len(confs) != 1 || confs[0].QualificationEventID != idQ1 || confs[0].FTDEventID != idD {
			t.Errorf("want one confirmation of %s for FTD %s, got %+v", idQ1, idD, confs)
		}
		if len(h.col.deadLetters(func(d record.DeadLetter) bool { return d.ClickID == click })) != 0 {
			t.Error("DLQ records for a click whose qualification was sent")
		}
	})

	t.Run("a redelivered waiting qualification is no duplicate", func(t *testing.T) {
		t.Parallel()
		const click = "waiting-redelivered"
		m, idQ := h.msg(h.topics.Qualifications, click, qualification("casino", "rejected"))
		h.produce(t, m, m)
		waitParked(t, click)
		h.send(t, h.topics.Deposits, click, deposit("casino", "13", "EUR", "succeeded"))
		h.waitAudits(t, "the status change", 1, and(byEvent(idQ), sent))
		h.barrier(t, "casino", click)
		// Both copies were handled before the deposit (one partition, in
		// order): neither may be audited as a duplicate of the other.
		if a := h.col.audits(byEvent(idQ)); len(a) != 1 || !sent(a[0]) || a[0].Goal != "ftd_status" {
			t.Errorf("want the qualification's one delivered status change, got %+v", a)
		}
		wantRequests(t, h.accepted(click),
			map[string]string{"path": "/alpha/conv"},
			map[string]string{"path": "/alpha/conv-change", "conv_status": "0"})
	})
}
