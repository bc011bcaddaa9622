package rebuild

import (
	"maps"
	"testing"
	"time"

	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/postback"
	"github.com/postbackd/postbackd/record"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// rec is one audit record of click c, recorded minutes after t0.
func rec(c string, minutes int, kind event.Kind, goal postback.Goal, outcome record.Outcome, f func(*record.Audit)) record.Audit {
	a := record.Audit{
		SchemaVersion: 1, ClickID: c, MerchantID: "m1", EventKind: kind, Goal: string(goal), Outcome: outcome,
		RecordedAt: t0.Add(time.Duration(minutes) * time.Minute), Attempts: 1,
	}
	if f != nil {
		f(&a)
	}
	return a
}

func pb(id, event, network, route string, params map[string]string) func(*record.Audit) {
	return func(a *record.Audit) {
		a.PostbackID, a.EventID, a.Network, a.Route, a.Params = id, event, network, route, params
	}
}

func find(t *testing.T, clicks []dedupe.RestoredClick, id string) dedupe.RestoredClick {
	t.Helper()
	for _, c := range clicks {
		if c.ClickID == id {
			return c
		}
	}
	t.Fatalf("click %s not restored (%d clicks)", id, len(clicks))
	return dedupe.RestoredClick{}
}

func TestFoldJourney(t *testing.T) {
	f := NewFold()
	occurred := t0.Add(-time.Hour)
	for _, a := range []record.Audit{
		// A registration names the network and params.
		rec("c1", 0, event.KindRegistration, postback.GoalReg, record.OutcomeDelivered,
			pb("p-reg", "r1", "scaleo", "event", map[string]string{"sub1": "a"})),
		// The FTD is routed by the click, fails once, then is delivered.
		rec("c1", 1, event.KindDeposit, postback.GoalFTD, record.OutcomeFailed, func(a *record.Audit) {
			pb("p-ftd", "d1", "scaleo", "click", map[string]string{"sub1": "a", "sub2": "b"})(a)
			a.Amount, a.Currency, a.OccurredAt, a.Status = "25.50", "EUR", &occurred, postback.StatusPending
		}),
		rec("c1", 2, event.KindDeposit, postback.GoalFTD, record.OutcomeDelivered, func(a *record.Audit) {
			pb("p-ftd", "d1", "scaleo", "click", map[string]string{"sub1": "a", "sub2": "b"})(a)
			a.Amount, a.Currency, a.OccurredAt, a.HTTPStatus = "25.50", "EUR", &occurred, 200
		}),
		// An rdep the partner refused for good.
		rec("c1", 3, event.KindDeposit, postback.GoalRD, record.OutcomeDeadLettered, func(a *record.Audit) {
			pb("p-rd", "d2", "scaleo", "click", map[string]string{"sub1": "a"})(a)
			a.Reason, a.Error = "postback_refused", "HTTP 400"
		}),
		// An event naming another network: routed there, the click keeps its own.
		rec("c1", 4, event.KindRevenue, postback.GoalRevshare, record.OutcomeDelivered, func(a *record.Audit) {
			pb("p-rev", "v1", "datingnet", "event", map[string]string{"sub9": "z"})(a)
			a.ClickNetwork = "scaleo"
		}),
		// The status change (route conversion).
		rec("c1", 5, event.KindQualification, postback.GoalFTDStatus, record.OutcomeDelivered, func(a *record.Audit) {
			pb("p-st", "q1", "scaleo", "conversion", map[string]string{"sub1": "a", "sub2": "b"})(a)
			a.Status = postback.StatusApproved
		}),
		// A retry still pending at the end.
		rec("c1", 6, event.KindDeposit, postback.GoalRD, record.OutcomeFailed, func(a *record.Audit) {
			pb("p-rd3", "d3", "scaleo", "click", nil)(a)
			a.Source = event.Source{Topic: "deposits", Partition: 1, Offset: 42}
		}),
		// Undecodable input: nothing to restore.
		{SchemaVersion: 1, Outcome: record.OutcomeDeadLettered, Reason: "undecodable", RecordedAt: t0},
	} {
		f.Add(a)
	}
	if f.Records != 8 || f.Ignored != 1 || f.Len() != 1 {
		t.Fatalf("records %d ignored %d clicks %d", f.Records, f.Ignored, f.Len())
	}
	now := t0.Add(time.Hour)
	c := find(t, f.Clicks(now, 24*time.Hour), "c1")

	wantFTD := dedupe.FTDRecord{
		EventID: "d1", Amount: "25.50", Currency: "EUR", OccurredAt: occurred, Delivered: true,
		Status: postback.StatusApproved, StatusEventID: "q1",
		Route: dedupe.Route{Partner: "scaleo", Via: dedupe.RouteClick, Params: map[string]string{"sub1": "a", "sub2": "b"}},
	}
	if c.FTD == nil || c.FTD.EventID != wantFTD.EventID || c.FTD.Amount != wantFTD.Amount || !c.FTD.OccurredAt.Equal(occurred) ||
		!c.FTD.Delivered || c.FTD.Failure != "" || c.FTD.Status != wantFTD.Status || c.FTD.StatusEventID != "q1" ||
		c.FTD.Route.Partner != "scaleo" || c.FTD.Route.Via != dedupe.RouteClick || !maps.Equal(c.FTD.Route.Params, wantFTD.Route.Params) {
		t.Errorf("FTD %+v, want %+v", c.FTD, wantFTD)
	}
	if c.Context == nil || c.Context.Network != "scaleo" || c.Context.MerchantID != "m1" ||
		!maps.Equal(c.Context.Params, map[string]string{"sub1": "a", "sub2": "b"}) ||
		!c.Context.RegisteredAt.Equal(t0) || !c.Context.FirstSeenAt.Equal(t0) {
		t.Errorf("context %+v: want scaleo, sub1+sub2 (not datingnet's sub9), registered at t0", c.Context)
	}
	if want := 24*time.Hour - time.Hour + 6*time.Minute; c.ContextTTL != want {
		t.Errorf("context TTL %s, want %s (from the click's last record)", c.ContextTTL, want)
	}
	answers := map[string]postback.Goal{}
	for _, a := range c.Answers {
		answers[a.ID] = a.Value
	}
	if !maps.Equal(answers, map[string]postback.Goal{"d1": postback.GoalFTD, "d2": postback.GoalRD, "d3": postback.GoalRD}) {
		t.Errorf("answers %v", answers)
	}
	routes := map[string]dedupe.Route{}
	for _, r := range c.Routes {
		routes[r.ID] = r.Value
	}
	if len(routes) != 3 || routes["d1"].Via != dedupe.RouteClick || routes["d1"].Partner != "scaleo" || routes["r1"].Partner != "" || routes["v1"].Partner != "" {
		t.Errorf("route memos %v: want d1, d2, d3 by the click; none for events that named their network", routes)
	}
	outcomes := map[string]dedupe.Delivery{}
	for _, d := range c.Deliveries {
		outcomes[d.ID] = d.Value
	}
	if len(outcomes) != 5 || outcomes["p-ftd"].Refused != "" || outcomes["p-ftd"].HTTPStatus != 200 ||
		outcomes["p-rd"].Refused != "postback_refused: HTTP 400" || outcomes["p-rev"].Refused != "" {
		t.Errorf("final outcomes %+v: want p-reg, p-ftd, p-rd (refused), p-rev, p-st; p-rd3 is pending", outcomes)
	}
	if _, ok := outcomes["p-rd3"]; ok {
		t.Error("a pending retry was restored as final")
	}
	if n, from := f.Pending(); n != 1 || !from[event.Source{Topic: "deposits", Partition: 1, Offset: 42}] {
		t.Errorf("pending %d from %v, want 1 from deposits/1/42", n, from)
	}
}

// TestFoldRules: the rules that are easy to get wrong — a delivery wins
// over a dead letter in either order, a status change recorded before its
// FTD, an FTD without an ftd goal, a second FTD, TTLs that ran out.
func TestFoldRules(t *testing.T) {
	f := NewFold()
	for _, a := range []record.Audit{
		// Status before its FTD's record (another member wrote it first).
		rec("early", 0, event.KindQualification, postback.GoalFTDStatus, record.OutcomeDelivered, func(a *record.Audit) {
			pb("s", "q", "n", "conversion", nil)(a)
			a.Status = postback.StatusRejected
		}),
		rec("early", 1, event.KindDeposit, postback.GoalFTD, record.OutcomeFailed, pb("f", "d", "n", "event", nil)),

		rec("dl", 0, event.KindDeposit, postback.GoalFTD, record.OutcomeDeadLettered, pb("f", "d", "n", "event", nil)),
		rec("dl", 1, event.KindDeposit, postback.GoalFTD, record.OutcomeDelivered, pb("f", "d", "n", "event", nil)),
		rec("dl", 2, event.KindDeposit, postback.GoalFTD, record.OutcomeDeadLettered, pb("f", "d", "n", "event", nil)),

		rec("nogoal", 0, event.KindDeposit, postback.GoalFTD, record.OutcomeSkipped, func(a *record.Audit) {
			pb("f", "d", "n", "default", nil)(a)
			a.Reason = "goal_not_configured"
		}),

		rec("two", 0, event.KindDeposit, postback.GoalFTD, record.OutcomeDelivered, pb("f1", "d1", "n", "event", nil)),
		rec("two", 1, event.KindDeposit, postback.GoalFTD, record.OutcomeDelivered, pb("f2", "d2", "n", "event", nil)),

		rec("old", -100*60, event.KindDeposit, postback.GoalFTD, record.OutcomeDelivered, pb("f", "d", "n", "event", map[string]string{"a": "1"})),
	} {
		f.Add(a)
	}
	clicks := f.Clicks(t0.Add(time.Hour), 48*time.Hour)

	if c := find(t, clicks, "early"); c.FTD == nil || !c.FTD.Delivered || c.FTD.Status != postback.StatusRejected || c.FTD.StatusEventID != "q" {
		t.Errorf("status recorded before its FTD: %+v, want delivered and rejected", c.FTD)
	}
	c := find(t, clicks, "dl")
	if !c.FTD.Delivered || c.FTD.Failure != "" || len(c.Deliveries) != 1 || c.Deliveries[0].Value.Refused != "" {
		t.Errorf("delivered between dead letters: FTD %+v outcomes %+v, want delivered", c.FTD, c.Deliveries)
	}
	if c := find(t, clicks, "nogoal"); c.FTD == nil || c.FTD.Failure != "ftd_not_sent" || c.FTD.Delivered || len(c.Deliveries) != 0 {
		t.Errorf("FTD of a partner without an ftd goal: %+v %+v, want failed ftd_not_sent and no outcome", c.FTD, c.Deliveries)
	}
	if c := find(t, clicks, "two"); c.FTD.EventID != "d1" {
		t.Errorf("second FTD: restored %s, want the first (d1)", c.FTD.EventID)
	}
	if got := f.SecondFTDs(); len(got) != 1 || len(got["two"]) != 1 || got["two"][0] != "d2" {
		t.Errorf("SecondFTDs %v, want two: [d2]", got)
	}
	c = find(t, clicks, "old")
	if c.FTD == nil || !c.FTD.Delivered {
		t.Errorf("an old FTD record must be restored whatever its age: %+v", c.FTD)
	}
	if c.Context != nil || len(c.Answers) != 0 || len(c.Deliveries) != 0 {
		t.Errorf("items past their TTL restored: context %+v answers %v outcomes %v", c.Context, c.Answers, c.Deliveries)
	}
}

// TestFoldEventsWithoutPostbacks: an event that made no postback still told
// its click its network and params (a failed deposit naming the network),
// unless it named another network; invalid input told nothing; a status
// change that was decided but refused still set the FTD's status.
func TestFoldEventsWithoutPostbacks(t *testing.T) {
	f := NewFold()
	own := func(network string, params map[string]string, reason string) func(*record.Audit) {
		return func(a *record.Audit) { a.EventID, a.Network, a.Params, a.Reason = "x", network, params, reason }
	}
	for _, a := range []record.Audit{
		rec("c", 0, event.KindDeposit, "", record.OutcomeSkipped, own("datingnet", map[string]string{"tr": "t1"}, "deposit_failed")),
		rec("c", 1, event.KindRevenue, postback.GoalRevshare, record.OutcomeSkipped, own("other", map[string]string{"x": "1"}, "deal_not_hybrid")),
		rec("c", 2, event.KindRevenue, postback.GoalRevshare, record.OutcomeSkipped, own("", map[string]string{"offer_id": "o"}, "deal_not_hybrid")),
		rec("bad", 0, event.KindDeposit, "", record.OutcomeDeadLettered, own("junk", map[string]string{"a": "b"}, "unknown_partner")),

		rec("s", 0, event.KindDeposit, postback.GoalFTD, record.OutcomeDelivered, pb("f", "d", "n", "event", nil)),
		rec("s", 1, event.KindQualification, postback.GoalFTDStatus, record.OutcomeDeadLettered, func(a *record.Audit) {
			pb("st", "q", "n", "conversion", nil)(a)
			a.Status, a.Reason = postback.StatusApproved, "postback_refused"
		}),
	} {
		f.Add(a)
	}
	clicks := f.Clicks(t0.Add(time.Minute), time.Hour)
	c := find(t, clicks, "c")
	if c.Context == nil || c.Context.Network != "datingnet" || !maps.Equal(c.Context.Params, map[string]string{"tr": "t1", "offer_id": "o"}) {
		t.Errorf("context from events without postbacks: %+v, want datingnet with tr and offer_id (not other's x)", c.Context)
	}
	if c := find(t, clicks, "bad"); c.Context != nil {
		t.Errorf("invalid input gave its click a context: %+v", c.Context)
	}
	if c := find(t, clicks, "s"); c.FTD == nil || c.FTD.Status != postback.StatusApproved || c.FTD.StatusEventID != "q" {
		t.Errorf("FTD after a refused status change: %+v, want approved by q", c.FTD)
	}
}

// TestFoldReplayReopens: a postback dead-lettered, then replayed (its next
// record a failed attempt), is open again: not restored as refused, counted
// pending, and its FTD no longer failed.
func TestFoldReplayReopens(t *testing.T) {
	f := NewFold()
	src := event.Source{Topic: "deposits", Partition: 0, Offset: 7}
	withSrc := func(a *record.Audit) { pb("f", "d", "n", "event", nil)(a); a.Source = src }
	f.Add(rec("c", 0, event.KindDeposit, postback.GoalFTD, record.OutcomeDeadLettered, withSrc))
	f.Add(rec("c", 1, event.KindDeposit, postback.GoalFTD, record.OutcomeFailed, withSrc))
	c := find(t, f.Clicks(t0.Add(time.Minute), time.Hour), "c")
	if c.FTD == nil || c.FTD.Failure != "" || c.FTD.Delivered || len(c.Deliveries) != 0 {
		t.Errorf("replayed FTD: %+v, outcomes %+v; want open (not failed, no final outcome)", c.FTD, c.Deliveries)
	}
	if n, from := f.Pending(); n != 1 || !from[src] {
		t.Errorf("pending %d %v, want the replayed FTD from %v", n, from, src)
	}
	// Delivered at last: final, and a later failed record changes nothing.
	f.Add(rec("c", 2, event.KindDeposit, postback.GoalFTD, record.OutcomeDelivered, withSrc))
	f.Add(rec("c", 3, event.KindDeposit, postback.GoalFTD, record.OutcomeFailed, withSrc))
	c = find(t, f.Clicks(t0.Add(time.Minute), time.Hour), "c")
	if !c.FTD.Delivered || len(c.Deliveries) != 1 || c.Deliveries[0].Value.Refused != "" {
		t.Errorf("delivered FTD: %+v %+v", c.FTD, c.Deliveries)
	}
	if n, _ := f.Pending(); n != 0 {
		t.Errorf("pending %d after the delivery", n)
	}
}
