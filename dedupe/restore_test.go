package dedupe

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/postbackd/postbackd/postback"
)

// restored is a click as a rebuild would restore it after Redis lost it:
// FTD e1 delivered and approved, rdep e2 routed by the click, the FTD's
// postback delivered and the rdep's refused for good.
func restored(click string) RestoredClick {
	route := Route{Partner: "scaleo", Via: RouteClick, Params: map[string]string{"sub1": "a"}}
	return RestoredClick{
		ClickID: click,
		Context: &ClickContext{
			MerchantID: "m1", Network: "scaleo", Params: map[string]string{"sub1": "a", "sub2": "b"},
			FirstSeenAt: t0, RegisteredAt: t0.Add(time.Second),
		},
		ContextTTL: time.Hour,
		FTD: &FTDRecord{
			EventID: "e1", Amount: "10.50", Currency: "EUR", OccurredAt: t0, Delivered: true,
			Status: postback.StatusApproved, StatusEventID: "q1", Route: route,
		},
		Answers: []RestoredItem[postback.Goal]{
			{ID: "e1", Value: postback.GoalFTD, TTL: time.Hour},
			{ID: "e2", Value: postback.GoalRD, TTL: time.Hour},
		},
		Routes: []RestoredItem[Route]{{ID: "e2", Value: Route{Partner: "scaleo", Via: RouteClick}, TTL: time.Hour}},
		Deliveries: []RestoredItem[Delivery]{
			{ID: "pb-ftd", Value: Delivery{HTTPStatus: 200, Attempts: 1, DeliveredAt: t0, URL: "https://t/ftd"}, TTL: time.Hour},
			{ID: "pb-rd", Value: Delivery{HTTPStatus: 400, Attempts: 1, DeliveredAt: t0, Refused: "HTTP 400"}, TTL: time.Hour},
			{ID: "pb-expired", Value: Delivery{HTTPStatus: 200, Attempts: 1, DeliveredAt: t0}, TTL: 0},
		},
	}
}

func restore(t *testing.T, s *Store, clicks ...RestoredClick) []RestoreResult {
	t.Helper()
	res, err := s.RestoreBatch(context.Background(), clicks)
	if err != nil {
		t.Fatalf("RestoreBatch: %v", err)
	}
	return res
}

// testRestore: a restored click behaves, for every operation of the hot
// path, as the click did before its state was lost; a second restore adds
// nothing.
func testRestore(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	res := restore(t, s, restored("c1"))
	want := RestoreResult{FTD: FTDCreated, Context: true, Answers: 2, Routes: 1, Deliveries: 2}
	if res[0] != want {
		t.Fatalf("first restore: %+v, want %+v", res[0], want)
	}

	// A new deposit is an rdep: the FTD record is back.
	cls, err := s.Classify(ctx, Deposit{ClickID: "c1", EventID: "e3", Amount: "5", Currency: "EUR", OccurredAt: t0})
	if err != nil || cls.Goal != postback.GoalRD {
		t.Fatalf("new deposit after restore: %+v %v, want rdep", cls, err)
	}
	// The FTD's own redelivery is the FTD again, with every restored fact.
	cls, err = s.Classify(ctx, Deposit{ClickID: "c1", EventID: "e1"})
	if err != nil || cls.Goal != postback.GoalFTD || !cls.Repeated {
		t.Fatalf("FTD redelivered after restore: %+v %v", cls, err)
	}
	f := cls.FTD
	if f.EventID != "e1" || f.Amount != "10.50" || f.Currency != "EUR" || !f.OccurredAt.Equal(t0) || !f.Delivered ||
		f.Status != postback.StatusApproved || f.StatusEventID != "q1" || f.Route.Partner != "scaleo" ||
		f.Route.Via != RouteClick || !maps.Equal(f.Route.Params, map[string]string{"sub1": "a"}) {
		t.Fatalf("restored FTD record %+v", f)
	}
	cls, err = s.Classify(ctx, Deposit{ClickID: "c1", EventID: "e2"})
	if err != nil || cls.Goal != postback.GoalRD || !cls.Repeated {
		t.Fatalf("rdep redelivered after restore: %+v %v, want the restored answer", cls, err)
	}

	// Final outcomes are final: neither postback can be claimed again; the
	// one whose TTL had run out was not restored.
	for id, refused := range map[string]string{"pb-ftd": "", "pb-rd": "HTTP 400"} {
		c, err := s.Claim(ctx, "c1", id, time.Minute)
		if err != nil || c.State != ClaimDelivered || c.Delivery.Refused != refused {
			t.Fatalf("claim %s after restore: %+v %v, want delivered (refused %q)", id, c, err, refused)
		}
	}
	if c, err := s.Claim(ctx, "c1", "pb-expired", time.Minute); err != nil || c.State != ClaimAcquired {
		t.Fatalf("claim of an expired delivery: %+v %v, want acquired", c, err)
	}

	// The status change is recorded: the same status repeats, another conflicts.
	q, err := s.Qualify(ctx, Qualification{ClickID: "c1", EventID: "q1", Status: postback.StatusApproved, Payload: []byte("x"), At: t0})
	if err != nil || q.Decision != DecideSend || !q.Repeated {
		t.Fatalf("qualification after restore: %+v %v, want send repeated", q, err)
	}
	q, err = s.Qualify(ctx, Qualification{ClickID: "c1", EventID: "q2", Status: postback.StatusRejected, Payload: []byte("x"), At: t0})
	if err != nil || q.Decision != DecideConflict {
		t.Fatalf("other status after restore: %+v %v, want conflict", q, err)
	}

	// The route memo keeps e2's partner; a new event is routed by the click.
	a := attr(t, s, Touch{ClickID: "c1", EventID: "e2", MerchantID: "m1", DefaultPartner: "other"})
	wantRoute(t, "e2 after restore", a, "scaleo", RouteClick, map[string]string{"sub1": "a", "sub2": "b"})
	a = attr(t, s, Touch{ClickID: "c1", EventID: "e5", MerchantID: "m1", DefaultPartner: "other", WaitPayload: []byte("p")})
	wantRoute(t, "new event after restore", a, "scaleo", RouteClick, map[string]string{"sub1": "a", "sub2": "b"})
	cc, found, err := s.LoadClick(ctx, "c1")
	if err != nil || !found || cc.MerchantID != "m1" || !cc.FirstSeenAt.Equal(t0) || !cc.RegisteredAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("restored context %+v found=%v %v", cc, found, err)
	}

	// A second restore finds everything and writes nothing.
	res = restore(t, s, restored("c1"))
	if want := (RestoreResult{FTD: FTDKept}); res[0] != want {
		t.Fatalf("second restore: %+v, want %+v", res[0], want)
	}
}

// testRestoreMerges: a restore beside state written since the loss adds
// the facts the state lacks and never replaces one: the same FTD gains its
// delivery and status, another FTD is a conflict left alone, a context keeps
// its network and the first value of each param.
func testRestoreMerges(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})

	// Same FTD, classified again after the loss, not delivered yet.
	if _, err := s.Classify(ctx, Deposit{ClickID: "same", EventID: "e1", Amount: "10.50", Currency: "EUR", OccurredAt: t0,
		Route: Route{Partner: "scaleo", Via: RouteClick, Params: map[string]string{"sub1": "a"}}}); err != nil {
		t.Fatal(err)
	}
	// Another FTD: a later deposit of the click, classified after the loss.
	if _, err := s.Classify(ctx, Deposit{ClickID: "other", EventID: "e9", Amount: "1", Currency: "EUR", OccurredAt: t0}); err != nil {
		t.Fatal(err)
	}
	// A context that learnt another network and a param since.
	attr(t, s, Touch{ClickID: "ctx", EventID: "x", MerchantID: "m1", Network: "datingnet", Params: map[string]string{"sub1": "new"}})

	ctxOnly := restored("ctx")
	ctxOnly.FTD, ctxOnly.Answers, ctxOnly.Routes, ctxOnly.Deliveries = nil, nil, nil, nil
	res := restore(t, s, restored("same"), restored("other"), ctxOnly)
	if res[0].FTD != FTDMerged || res[1].FTD != FTDConflict || res[1].ExistingFTD != "e9" || res[2].FTD != FTDNone || !res[2].Context {
		t.Fatalf("restore beside newer state: %+v", res)
	}
	cls, err := s.Classify(ctx, Deposit{ClickID: "same", EventID: "e1"})
	if err != nil || !cls.FTD.Delivered || cls.FTD.Status != postback.StatusApproved || cls.FTD.StatusEventID != "q1" {
		t.Fatalf("merged FTD %+v %v, want delivered and approved", cls.FTD, err)
	}
	cls, err = s.Classify(ctx, Deposit{ClickID: "other", EventID: "e9"})
	if err != nil || cls.FTD.EventID != "e9" || cls.FTD.Delivered || cls.FTD.Status != "" {
		t.Fatalf("conflicting FTD %+v %v, want e9 untouched", cls.FTD, err)
	}
	cc, _, err := s.LoadClick(ctx, "ctx")
	if err != nil || cc.Network != "datingnet" || !maps.Equal(cc.Params, map[string]string{"sub1": "new", "sub2": "b"}) ||
		!cc.RegisteredAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("merged context %+v %v, want datingnet, sub1 kept, sub2 added, registered", cc, err)
	}

	// A delivered FTD is not made failed by a restore that says it failed.
	failed := restored("same")
	failed.FTD.Delivered, failed.FTD.Failure = false, "ftd_dead_lettered"
	restore(t, s, failed)
	if cls, err = s.Classify(ctx, Deposit{ClickID: "same", EventID: "e1"}); err != nil || !cls.FTD.Delivered || cls.FTD.Failure != "" {
		t.Fatalf("FTD after a restore saying failed: %+v %v", cls.FTD, err)
	}
}

// testInspect: Inspect reports every kind of state a click can have, and
// nothing of another click.
func testInspect(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{Shards: 4})
	restore(t, s, restored("c1"), restored("c2"))
	if _, err := s.Classify(ctx, Deposit{ClickID: "c1", EventID: "e3", Amount: "5", Currency: "EUR", OccurredAt: t0}); err != nil {
		t.Fatal(err)
	}
	held, err := s.Claim(ctx, "c1", "pb-held", time.Minute)
	if err != nil || held.State != ClaimAcquired {
		t.Fatal(held, err)
	}
	attr(t, s, Touch{ClickID: "w1", EventID: "late", MerchantID: "m1", WaitPayload: []byte("p")})
	if _, err := s.Qualify(ctx, Qualification{ClickID: "q1", EventID: "qa", Status: "approved", Payload: []byte("x"), At: t0}); err != nil {
		t.Fatal(err)
	}
	for _, j := range []struct{ id, click string }{{"pb:1", "c1"}, {"pb:2", "c2"}, {"oq:c1:q", "c1"}} {
		if err := s.Schedule(ctx, j.id, t0, []byte(`{"kind":"postback","click_id":"`+j.click+`"}`)); err != nil {
			t.Fatal(err)
		}
	}

	st, err := s.Inspect(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Context == nil || st.Context.Network != "scaleo" || st.ContextTTL <= 0 || st.FTD == nil || st.FTD.EventID != "e1" || !st.FTD.Delivered {
		t.Errorf("context %+v (ttl %s), FTD %+v", st.Context, st.ContextTTL, st.FTD)
	}
	if !maps.Equal(st.Answers, map[string]string{"e1": "ftd", "e2": "rdep", "e3": "rdep"}) {
		t.Errorf("answers %v", st.Answers)
	}
	if len(st.Routes) != 1 || st.Routes["e2"].Partner != "scaleo" || st.Routes["e2"].Via != RouteClick {
		t.Errorf("routes %v", st.Routes)
	}
	byID := map[string]PostbackState{}
	for _, p := range st.Postbacks {
		byID[p.ID] = p
	}
	if len(byID) != 3 || byID["pb-ftd"].Delivery == nil || byID["pb-rd"].Delivery.Refused == "" || byID["pb-held"].Lease <= 0 || byID["pb-held"].Delivery != nil {
		t.Errorf("postbacks %+v", st.Postbacks)
	}
	if len(st.Jobs) != 2 || st.Jobs[0].ID == "pb:2" || st.Jobs[1].ID == "pb:2" {
		t.Errorf("jobs %+v, want pb:1 and oq:c1:q only", st.Jobs)
	}
	if st.Parked != nil || len(st.Waiting) != 0 {
		t.Errorf("c1 has nothing parked or waiting: %+v %v", st.Parked, st.Waiting)
	}
	if st, err = s.Inspect(ctx, "w1"); err != nil || !st.Waiting["late"] {
		t.Errorf("waiting event of w1: %+v %v", st, err)
	}
	if st, err = s.Inspect(ctx, "q1"); err != nil || st.Parked == nil || st.Parked.EventID != "qa" || st.Parked.Released != "" {
		t.Errorf("parked qualification of q1: %+v %v", st, err)
	}
	if st, err = s.Inspect(ctx, "nobody"); err != nil || st.Context != nil || st.FTD != nil || len(st.Postbacks) != 0 || len(st.Jobs) != 0 {
		t.Errorf("unknown click: %+v %v", st, err)
	}
}

// testPrepareReplay: a refused postback becomes sendable again and its FTD
// loses its failure; a delivered one is left alone; replays are remembered.
func testPrepareReplay(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	restore(t, s, restored("c1"))
	if _, err := s.Classify(ctx, Deposit{ClickID: "f", EventID: "d1", Amount: "1", Currency: "EUR", OccurredAt: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, "f", "pb-f", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkDelivered(ctx, "f", "pb-f", Delivery{HTTPStatus: 400, Refused: "HTTP 400"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FailFTD(ctx, "f", "d1", "ftd_dead_lettered"); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		click, pb, ftd string
		want           ReplayPrep
	}{
		{"c1", "pb-ftd", "e1", ReplayDelivered},
		{"c1", "pb-rd", "", ReplayCleared},
		{"c1", "pb-rd", "", ReplayUnmarked}, // a second call
		{"c1", "never", "", ReplayUnmarked},
		{"f", "pb-f", "d1", ReplayCleared},
	} {
		got, err := s.PrepareReplay(ctx, tc.click, tc.pb, tc.ftd)
		if err != nil || got != tc.want {
			t.Errorf("PrepareReplay(%s, %s) = %q %v, want %q", tc.click, tc.pb, got, err, tc.want)
		}
	}
	if c, err := s.Claim(ctx, "c1", "pb-rd", time.Minute); err != nil || c.State != ClaimAcquired {
		t.Errorf("claim of a replayed refusal: %+v %v, want acquired", c, err)
	}
	if c, err := s.Claim(ctx, "c1", "pb-ftd", time.Minute); err != nil || c.State != ClaimDelivered {
		t.Errorf("claim of a delivered postback after PrepareReplay: %+v %v, want delivered", c, err)
	}
	// The FTD's failure is forgotten: a qualification waits for it again.
	q, err := s.Qualify(ctx, Qualification{ClickID: "f", EventID: "q", Status: "approved", Payload: []byte("x"), At: t0})
	if err != nil || q.Decision != DecideWait {
		t.Errorf("qualification after the FTD's replay: %+v %v, want wait", q, err)
	}

	if _, ok, err := s.Replayed(ctx, "dlq/0/7"); err != nil || ok {
		t.Fatalf("Replayed before MarkReplayed: %v %v", ok, err)
	}
	for _, at := range []time.Time{t0, t0.Add(time.Hour)} {
		if err := s.MarkReplayed(ctx, "dlq/0/7", at); err != nil {
			t.Fatal(err)
		}
	}
	if at, ok, err := s.Replayed(ctx, "dlq/0/7"); err != nil || !ok || !at.Equal(t0) {
		t.Errorf("Replayed = %s %v %v, want the first replay's time", at, ok, err)
	}
}

// testInspectGlobIDs: click ids with the characters SCAN reads as a
// pattern are inspected as they are, and not mixed with other clicks.
func testInspectGlobIDs(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	for _, id := range []string{"a[1]", "a1", `x\y`, "q?", "s*"} {
		if _, err := s.Classify(ctx, Deposit{ClickID: id, EventID: "d-" + id, Amount: "1", Currency: "EUR", OccurredAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"a[1]", "a1", `x\y`, "q?", "s*"} {
		st, err := s.Inspect(ctx, id)
		if err != nil || st.FTD == nil || st.FTD.EventID != "d-"+id || len(st.Answers) != 1 {
			t.Errorf("Inspect(%q): %+v %v, want its own FTD and answer only", id, st, err)
		}
	}
}
