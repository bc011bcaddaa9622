package pipeline_test

// Attribution: every postback reaches the affiliate it belongs to, with the
// affiliate's own fields, whatever the order in which a click's events on
// different topics are consumed.

import (
	"context"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/internal/tracker"
	"github.com/postbackd/postbackd/record"
)

func registration(merchant, kind, network string, params map[string]string) ev {
	e := ev{"merchant_id": merchant, "kind": kind, "player_id": "player-1"}
	if network != "" {
		e["network"] = network
	}
	if params != nil {
		e["params"] = params
	}
	return e
}

// trackerString is the tracker-string network's value for click: beta's
// pattern decodes affid "aff-<n>".
func trackerString(n string) map[string]string {
	return map[string]string{"tr": "trID_100" + n + "_aff" + n + "-tx" + n + "-c" + n + "-x_trID", "offer_id": "offer-" + n}
}

// msgOf is h.msg without the event id.
func (h *harness) msgOf(topic, click string, e ev) kafka.Message {
	m, _ := h.msg(topic, click, e)
	return m
}

// clickKey is the Redis key of one of click's records (dedupe's layout).
func (h *harness) clickKey(click, kind string) string {
	return h.prefix + ":{c:" + click + "}:" + kind
}

// wantAllCarry asserts every request carries the query fields of want.
func wantAllCarry(t *testing.T, got []tracker.Request, want map[string]string) {
	t.Helper()
	for i, r := range got {
		for k, v := range want {
			g := r.Query.Get(k)
			if k == "path" {
				g = r.Path
			}
			if g != v {
				t.Errorf("request %d %s: %s = %q, want %q (all:%s)", i, r.Path, k, g, v, describe(got))
			}
		}
	}
}

// goalCounts counts requests by goal_alias.
func goalCounts(rs []tracker.Request) map[string]int {
	out := map[string]int{}
	for _, r := range rs {
		out[r.Query.Get("goal_alias")]++
	}
	return out
}

// wantRoutes waits for n delivered (not replayed) audit records of click
// and asserts that, by goal, they were routed to network by how.
func wantRoutes(t *testing.T, h *harness, click string, n int, want map[string]string, network string) {
	t.Helper()
	got := map[string]string{}
	for _, a := range h.waitAudits(t, "deliveries of "+click, n, and(byClick(click), sent)) {
		if a.Network != network {
			t.Errorf("%s %s went to %s, want %s", a.Goal, a.EventID, a.Network, network)
		}
		if prev, ok := got[a.Goal]; ok && prev != a.Route {
			t.Errorf("%s: routes %s and %s", a.Goal, prev, a.Route)
		}
		got[a.Goal] = a.Route
	}
	if !maps.Equal(got, want) {
		t.Errorf("routes by goal %v, want %v", got, want)
	}
}

func TestAttribution(t *testing.T) {
	t.Parallel()
	runAttributionSuite(t, newHarness(t, harnessOptions{}))
}

// TestAttributionOnRedisCluster runs the same suite with the service on a
// real Redis Cluster.
func TestAttributionOnRedisCluster(t *testing.T) {
	if os.Getenv("REDIS_CLUSTER_ADDRS") == "" {
		t.Skip("REDIS_CLUSTER_ADDRS not set: no real Redis Cluster to run attribution on")
	}
	t.Parallel()
	runAttributionSuite(t, newHarness(t, harnessOptions{cluster: true}))
}

func runAttributionSuite(t *testing.T, h *harness) {
	t.Run("registration with a tracker string, then a trial, deposits and revenue without params", func(t *testing.T) {
		t.Parallel()
		// Produced all at once on four topics: their consumption order is
		// anybody's. Deposits and revenue that come first wait for the
		// registration (merchant dating waits); the trial follows the
		// registration on its own topic.
		const click = "tr-journey"
		tr := trackerString("7")
		var msgs []kafka.Message
		msgs = append(msgs, h.msgOf(h.topics.Registrations, click, registration("dating", "registration", "beta", tr)))
		msgs = append(msgs, h.msgOf(h.topics.Registrations, click, registration("dating", "trial", "", nil)))
		for _, amount := range []string{"29.99", "19.99", "9.99"} {
			msgs = append(msgs, h.msgOf(h.topics.Deposits, click, deposit("dating", amount, "USD", "succeeded")))
		}
		msgs = append(msgs, h.msgOf(h.topics.Revenue, click, revenue("dating", "12.00", "USD")))
		h.produce(t, msgs...)

		got := h.waitAccepted(t, click, 6)
		if c := goalCounts(got); !maps.Equal(c, map[string]int{"free_reg": 1, "trial": 1, "signup": 1, "rebill": 2, "revshare": 1}) {
			t.Errorf("postbacks by goal %v, want one free_reg, trial, signup, revshare and two rebills:%s", c, describe(got))
		}
		wantAllCarry(t, got, map[string]string{"path": "/beta/conv", "affid": "aff7", "offer": "offer-7"})
		wantRoutes(t, h, click, 6, map[string]string{"reg": "event", "trial": "click", "ftd": "click", "rdep": "click", "revshare": "click"}, "beta")
		h.barrier(t, "dating", click)
		if n := len(h.accepted(click)); n != 6 {
			t.Errorf("tracker accepted %d requests, want 6", n)
		}
	})

	t.Run("registration without a network routes by default with its params", func(t *testing.T) {
		t.Parallel()
		const click = "tr-nonet"
		tr := trackerString("8")
		h.produce(t, []kafka.Message{
			h.msgOf(h.topics.Deposits, click, deposit("trk", "10.00", "USD", "succeeded")),
			h.msgOf(h.topics.Revenue, click, revenue("trk", "5.00", "USD")),
			h.msgOf(h.topics.Registrations, click, registration("trk", "registration", "", tr)),
		}...)
		got := h.waitAccepted(t, click, 3)
		wantAllCarry(t, got, map[string]string{"path": "/beta/conv", "affid": "aff8", "offer": "offer-8"})
		wantRoutes(t, h, click, 3, map[string]string{"reg": "default", "ftd": "default", "revshare": "default"}, "beta")
	})

	t.Run("params that came only on the first deposit reach later revenue", func(t *testing.T) {
		t.Parallel()
		const click = "first-deposit-params"
		tr := trackerString("9")
		d := deposit("casino", "30.00", "USD", "succeeded")
		d["network"], d["params"] = "beta", tr
		idD := h.send(t, h.topics.Deposits, click, d)
		h.waitAudits(t, "the first deposit", 1, and(byEvent(idD), sent))
		idR := h.send(t, h.topics.Revenue, click, revenue("casino", "20.00", "USD"))
		h.waitAudits(t, "the revenue", 1, and(byEvent(idR), sent))
		h.send(t, h.topics.Deposits, click, deposit("casino", "15.00", "USD", "succeeded"))
		got := h.waitAccepted(t, click, 3)
		wantAllCarry(t, got, map[string]string{"path": "/beta/conv", "affid": "aff9", "offer": "offer-9"})
		if c := goalCounts(got); !maps.Equal(c, map[string]int{"signup": 1, "revshare": 1, "rebill": 1}) {
			t.Errorf("postbacks by goal %v:%s", c, describe(got))
		}
		wantRoutes(t, h, click, 3, map[string]string{"ftd": "event", "revshare": "click", "rdep": "click"}, "beta")
	})

	t.Run("an event naming another network goes there once; the click keeps its partner", func(t *testing.T) {
		t.Parallel()
		const click = "other-network"
		tr := trackerString("3")
		idR := h.send(t, h.topics.Registrations, click, registration("casino", "registration", "beta", tr))
		h.waitAudits(t, "registration", 1, and(byEvent(idR), sent))
		other := deposit("casino", "25.00", "EUR", "succeeded")
		other["network"] = "gamma"
		other["params"] = map[string]string{"sub": "g"}
		m1, _ := h.msg(h.topics.Deposits, click, deposit("casino", "10.00", "EUR", "succeeded"))
		m2, idOther := h.msg(h.topics.Deposits, click, other)
		m3, _ := h.msg(h.topics.Deposits, click, deposit("casino", "40.00", "EUR", "succeeded"))
		h.produce(t, m1, m2, m3)
		h.barrier(t, "casino", click)

		var beta, gamma []tracker.Request
		for _, r := range h.accepted(click) {
			if strings.HasPrefix(r.Path, "/gamma/") {
				gamma = append(gamma, r)
			} else {
				beta = append(beta, r)
			}
		}
		wantRequests(t, gamma, map[string]string{"path": "/gamma/pb", "amount": "25.00"})
		wantRequests(t, beta,
			map[string]string{"path": "/beta/conv", "goal_alias": "free_reg", "affid": "aff3"},
			map[string]string{"path": "/beta/conv", "goal_alias": "signup", "amount": "10.00", "affid": "aff3", "offer": "offer-3"},
			map[string]string{"path": "/beta/conv", "goal_alias": "rebill", "amount": "40.00", "affid": "aff3", "offer": "offer-3"})
		a := h.col.audits(and(byEvent(idOther), sent))
		if len(a) != 1 || a[0].Network != "gamma" || a[0].Route != "event" || a[0].ClickNetwork != "beta" {
			t.Errorf("the other network's audit record: %+v; want gamma, route event, click_network beta", a)
		}
	})

	t.Run("deposit before its registration, waiting on: the click's partner and params", func(t *testing.T) {
		t.Parallel()
		const click = "early-deposit-wait"
		mD, idD := h.msg(h.topics.Deposits, click, deposit("dating", "50.00", "USD", "succeeded"))
		h.produce(t, mD)
		waitUntil(t, "the deposit waiting in Redis", func() bool {
			return h.redis.HExists(context.Background(), h.clickKey(click, "await"), idD).Val()
		})
		if n := len(h.col.audits(byEvent(idD))); n != 0 {
			t.Fatalf("the waiting deposit has %d audit records already", n)
		}
		h.send(t, h.topics.Registrations, click, registration("dating", "registration", "beta", trackerString("5")))
		h.waitAudits(t, "the released deposit", 1, and(byEvent(idD), sent))
		got := h.waitAccepted(t, click, 2)
		wantAllCarry(t, got, map[string]string{"path": "/beta/conv", "affid": "aff5", "offer": "offer-5"})
		wantRoutes(t, h, click, 2, map[string]string{"reg": "event", "ftd": "click"}, "beta")
		waitUntil(t, "the released deposit marked finished", func() bool {
			return h.redis.HGet(context.Background(), h.clickKey(click, "await"), idD).Val() == "-"
		})
		// Redelivered after its release: routed as before, nothing sent again.
		h.produce(t, mD)
		h.waitAudits(t, "the replayed deposit", 2, byEvent(idD))
		if n := len(h.accepted(click)); n != 2 {
			t.Errorf("tracker accepted %d requests after the redelivery, want 2", n)
		}
	})

	t.Run("deposits that waited are classified in the order they were consumed", func(t *testing.T) {
		t.Parallel()
		const click = "waited-order"
		amounts := []string{"11.00", "22.00", "33.00", "44.00", "55.00"}
		var msgs []kafka.Message
		for i, a := range amounts {
			// Event ids descending: a store that hands waiting events back
			// sorted by id returns them backwards.
			d := deposit("dating", a, "USD", "succeeded")
			d["event_id"] = fmt.Sprintf("waited-order-%d", 9-i)
			msgs = append(msgs, h.msgOf(h.topics.Deposits, click, d))
		}
		h.produce(t, msgs...)
		waitUntil(t, "five deposits waiting", func() bool {
			return h.redis.HLen(context.Background(), h.clickKey(click, "await")).Val() == int64(len(amounts))
		})
		h.send(t, h.topics.Registrations, click, registration("dating", "registration", "beta", trackerString("1")))
		got := h.waitAccepted(t, click, 1+len(amounts))
		var deposits []tracker.Request
		for _, r := range got {
			if r.Query.Get("goal_alias") != "free_reg" {
				deposits = append(deposits, r)
			}
		}
		want := []map[string]string{{"goal_alias": "signup", "amount": amounts[0], "affid": "aff1"}}
		for _, a := range amounts[1:] {
			want = append(want, map[string]string{"goal_alias": "rebill", "amount": a, "affid": "aff1"})
		}
		wantRequests(t, deposits, want...)
	})

	t.Run("deposit before its registration, waiting off: the default partner at once", func(t *testing.T) {
		t.Parallel()
		const click = "early-deposit-nowait"
		idD := h.send(t, h.topics.Deposits, click, deposit("casino", "50.00", "EUR", "succeeded"))
		a := h.waitAudits(t, "the deposit", 1, and(byEvent(idD), sent))
		if a[0].Network != "alpha" || a[0].Route != "default" {
			t.Errorf("deposit without a route, waiting off: %+v; want alpha by default", a[0])
		}
		idR := h.send(t, h.topics.Registrations, click, registration("casino", "registration", "beta", trackerString("6")))
		h.waitAudits(t, "registration", 1, and(byEvent(idR), sent))
		h.send(t, h.topics.Deposits, click, deposit("casino", "20.00", "EUR", "succeeded"))
		got := h.waitAccepted(t, click, 3)
		wantRequests(t, got,
			map[string]string{"path": "/alpha/conv", "goal_alias": "ftd"},
			map[string]string{"path": "/beta/conv", "goal_alias": "free_reg", "affid": "aff6"},
			map[string]string{"path": "/beta/conv", "goal_alias": "rebill", "affid": "aff6", "offer": "offer-6"})
	})

	t.Run("no network, no default partner: the DLQ", func(t *testing.T) {
		t.Parallel()
		const click = "no-route"
		idD := h.send(t, h.topics.Deposits, click, deposit("lone", "50.00", "EUR", "succeeded"))
		a := h.waitEventAudit(t, idD)
		var d []record.DeadLetter
		waitUntil(t, "the dead letter", func() bool {
			d = h.col.deadLetters(func(d record.DeadLetter) bool { return d.EventID == idD })
			return len(d) > 0
		})
		if a.Outcome != record.OutcomeDeadLettered || a.Reason != "no_route" || len(d) != 1 || d[0].Reason != "no_route" || d[0].Value == "" {
			t.Errorf("audit %+v, dead letters %+v; want no_route, with the event to replay", a, d)
		}
	})

	t.Run("the status change goes where the FTD went, after the click context expired or changed", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			click  string
			damage func(ctx context.Context, key string) error
		}{
			{"status-after-expiry", func(ctx context.Context, key string) error { return h.redis.Del(ctx, key).Err() }},
			{"status-after-change", func(ctx context.Context, key string) error {
				// As an older version's last write would have left it.
				return h.redis.Set(ctx, key, `{"merchant_id":"casino","network":"gamma","params":{"tr":"trID_1_zz-zz-zz-zz_trID"}}`, time.Hour).Err()
			}},
		} {
			idR := h.send(t, h.topics.Registrations, tc.click, registration("casino", "registration", "beta", trackerString("4")))
			h.waitAudits(t, "registration", 1, and(byEvent(idR), sent))
			idD := h.send(t, h.topics.Deposits, tc.click, deposit("casino", "70.00", "EUR", "succeeded"))
			h.waitAudits(t, "FTD", 1, and(byEvent(idD), sent))
			if err := tc.damage(context.Background(), h.clickKey(tc.click, "ctx")); err != nil {
				t.Fatal(err)
			}
			idQ := h.send(t, h.topics.Qualifications, tc.click, qualification("casino", "approved"))
			a := h.waitAudits(t, "status change", 1, and(byEvent(idQ), sent))
			if a[0].Network != "beta" || a[0].Route != "conversion" {
				t.Errorf("%s: status change %+v; want beta by conversion", tc.click, a[0])
			}
			got := h.accepted(tc.click)
			wantRequests(t, got,
				map[string]string{"goal_alias": "free_reg"},
				map[string]string{"goal_alias": "signup", "affid": "aff4", "offer": "offer-4"},
				map[string]string{"path": "/beta/conv-change", "conv_status": "approved", "amount": "70.00", "affid": "aff4", "offer": "offer-4"})
			var c []record.Confirmation
			waitUntil(t, "the confirmation", func() bool {
				c = h.col.confirmations(func(c record.Confirmation) bool { return c.ClickID == tc.click })
				return len(c) > 0
			})
			if len(c) != 1 || c[0].Network != "beta" {
				t.Errorf("%s: confirmations %+v; want one for beta", tc.click, c)
			}
		}
	})

	t.Run("an early qualification's status change follows the FTD's route", func(t *testing.T) {
		t.Parallel()
		const click = "early-qual-route"
		idQ := h.send(t, h.topics.Qualifications, click, qualification("dating", "rejected"))
		waitUntil(t, "the qualification parked", func() bool {
			return h.redis.Exists(context.Background(), h.clickKey(click, "parked")).Val() == 1
		})
		h.send(t, h.topics.Deposits, click, deposit("dating", "11.00", "USD", "succeeded"))
		h.send(t, h.topics.Registrations, click, registration("dating", "registration", "beta", trackerString("2")))
		a := h.waitAudits(t, "status change", 1, and(byEvent(idQ), sent))
		if a[0].Network != "beta" || a[0].Route != "conversion" {
			t.Errorf("status change %+v; want beta by conversion", a[0])
		}
		got := h.waitAccepted(t, click, 3)
		wantAllCarry(t, got, map[string]string{"affid": "aff2", "offer": "offer-2"})
	})
}

// TestAttributionDeadline: events that wait for a network that never comes
// go to the default partner when the window ends, or to the DLQ without
// one; a waiting event Redis forgot is handled all the same.
func TestAttributionDeadline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{attributionWait: 500 * time.Millisecond})

	t.Run("default partner after the window", func(t *testing.T) {
		t.Parallel()
		const click = "deadline-default"
		d := deposit("dating", "10.00", "USD", "succeeded")
		d["params"] = map[string]string{"custom2": "c2"}
		idD := h.send(t, h.topics.Deposits, click, d)
		a := h.waitAudits(t, "the deposit routed by default", 1, and(byEvent(idD), sent))
		if a[0].Network != "alpha" || a[0].Route != "default" {
			t.Errorf("audit %+v; want alpha by default", a[0])
		}
		wantRequests(t, h.accepted(click), map[string]string{"path": "/alpha/conv", "goal_alias": "ftd", "custom2": "c2"})
	})

	t.Run("deposits routed at the deadline keep their order", func(t *testing.T) {
		t.Parallel()
		const click = "deadline-order"
		amounts := []string{"1.00", "2.00", "3.00", "4.00", "5.00", "6.00"}
		var msgs []kafka.Message
		for _, a := range amounts {
			msgs = append(msgs, h.msgOf(h.topics.Deposits, click, deposit("dating", a, "USD", "succeeded")))
		}
		h.produce(t, msgs...)
		got := h.waitAccepted(t, click, len(amounts))
		want := []map[string]string{{"path": "/alpha/conv", "goal_alias": "ftd", "amount": amounts[0]}}
		for _, a := range amounts[1:] {
			want = append(want, map[string]string{"path": "/alpha/conv", "goal_alias": "rdep", "amount": a})
		}
		wantRequests(t, got, want...)
	})

	t.Run("no default partner: the DLQ after the window", func(t *testing.T) {
		t.Parallel()
		const click = "deadline-dlq"
		idD := h.send(t, h.topics.Revenue, click, revenue("lonewait", "10.00", "USD"))
		a := h.waitEventAudit(t, idD)
		if a.Outcome != record.OutcomeDeadLettered || a.Reason != "no_route" {
			t.Errorf("audit %+v; want dead-lettered no_route", a)
		}
	})

	t.Run("a waiting event whose record lapsed is handled from its job", func(t *testing.T) {
		t.Parallel()
		const click = "deadline-lapsed"
		idD := h.send(t, h.topics.Deposits, click, deposit("dating", "12.00", "USD", "succeeded"))
		key := h.clickKey(click, "await")
		waitUntil(t, "the deposit waiting", func() bool { return h.redis.HExists(context.Background(), key, idD).Val() })
		if err := h.redis.Del(context.Background(), key).Err(); err != nil {
			t.Fatal(err)
		}
		a := h.waitAudits(t, "the lapsed deposit", 1, and(byEvent(idD), sent))
		if a[0].Network != "alpha" || a[0].Route != "default" {
			t.Errorf("audit %+v; want alpha by default", a[0])
		}
	})
}

// TestParkedQualificationLapses: a parked qualification whose record Redis
// no longer holds when its window ends is dead-lettered and audited, never
// acknowledged without a trace.
func TestParkedQualificationLapses(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{window: 2 * time.Second})
	const click = "lapsed-qualification"
	idQ := h.send(t, h.topics.Qualifications, click, qualification("casino", "approved"))
	key := h.clickKey(click, "parked")
	waitUntil(t, "the qualification parked", func() bool { return h.redis.Exists(context.Background(), key).Val() == 1 })
	if err := h.redis.Del(context.Background(), key).Err(); err != nil {
		t.Fatal(err)
	}
	a := h.waitEventAudit(t, idQ)
	var d []record.DeadLetter
	waitUntil(t, "the dead letter", func() bool {
		d = h.col.deadLetters(func(d record.DeadLetter) bool { return d.EventID == idQ })
		return len(d) > 0
	})
	if a.Outcome != record.OutcomeDeadLettered || a.Reason != "qualification_lapsed" || len(d) != 1 || d[0].Reason != "qualification_lapsed" ||
		d[0].Source.Topic != h.topics.Qualifications {
		t.Errorf("audit %+v, dead letters %+v; want qualification_lapsed with its source", a, d)
	}
}
