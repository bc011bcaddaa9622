package dedupe

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// attr calls Attribute and fails the test on error.
func attr(t *testing.T, s *Store, tc Touch) Attribution {
	t.Helper()
	if tc.At.IsZero() {
		tc.At = t0
	}
	a, err := s.Attribute(context.Background(), tc)
	if err != nil {
		t.Fatalf("Attribute(%+v): %v", tc, err)
	}
	return a
}

func wantRoute(t *testing.T, what string, a Attribution, partner string, via RouteVia, params map[string]string) {
	t.Helper()
	if a.State != StateRouted || a.Route.Partner != partner || a.Route.Via != via || !maps.Equal(a.Route.Params, params) {
		t.Errorf("%s: %s %+v, want routed to %s by %s with %v", what, a.State, a.Route, partner, via, params)
	}
}

// testAttributeAccumulates: the click context accumulates from every event,
// keeps its first network and the first value of each param, and an event
// that carries nothing changes nothing.
func testAttributeAccumulates(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	tr := map[string]string{"tr": "trID_1_a1-t1-c1-x_trID", "offer_id": "o7"}

	// A registration with the tracker string and the offer.
	a := attr(t, s, Touch{ClickID: "c", EventID: "reg", MerchantID: "m", Network: "beta", Params: tr})
	wantRoute(t, "registration", a, "beta", RouteEvent, tr)
	// A trial, deposits and revenue without params or network: the click's.
	for _, ev := range []string{"trial", "dep1", "dep2", "rev1"} {
		wantRoute(t, ev, attr(t, s, Touch{ClickID: "c", EventID: ev, MerchantID: "m", DefaultPartner: "alpha"}), "beta", RouteClick, tr)
	}
	// An event without network adds a new key; one that repeats a key does
	// not change it, but its own value is what it is routed with.
	a = attr(t, s, Touch{ClickID: "c", EventID: "dep3", Params: map[string]string{"custom2": "x y", "offer_id": "o8", "empty": ""}})
	wantRoute(t, "dep3", a, "beta", RouteClick, map[string]string{"tr": tr["tr"], "offer_id": "o8", "custom2": "x y"})
	c, ok, err := s.LoadClick(ctx, "c")
	if err != nil || !ok {
		t.Fatalf("LoadClick: %v %v", ok, err)
	}
	want := map[string]string{"tr": tr["tr"], "offer_id": "o7", "custom2": "x y"}
	if c.Network != "beta" || c.MerchantID != "m" || !maps.Equal(c.Params, want) || !c.FirstSeenAt.Equal(t0) {
		t.Errorf("context %+v, want network beta, merchant m, params %v, first seen %s", c, want, t0)
	}
	// An event naming another network goes there, with its own params only,
	// and the click keeps its partner and params.
	a = attr(t, s, Touch{ClickID: "c", EventID: "dep4", Network: "gamma", Params: map[string]string{"sub": "g1"}})
	wantRoute(t, "dep4 (other network)", a, "gamma", RouteEvent, map[string]string{"sub": "g1"})
	if a.Click.Network != "beta" {
		t.Errorf("dep4: click network %q, want beta kept", a.Click.Network)
	}
	wantRoute(t, "dep5 after the other network", attr(t, s, Touch{ClickID: "c", EventID: "dep5"}), "beta", RouteClick, want)
	// The same network named again is the click's: params merge.
	a = attr(t, s, Touch{ClickID: "c", EventID: "dep6", Network: "beta", Params: map[string]string{"custom3": "z"}})
	want["custom3"] = "z"
	wantRoute(t, "dep6 (the click's network)", a, "beta", RouteEvent, want)

	// Params before any network: kept, and the first network then adopts them.
	wantRoute(t, "params only", attr(t, s, Touch{ClickID: "p", EventID: "d1", DefaultPartner: "alpha", Params: map[string]string{"custom2": "v"}}),
		"alpha", RouteDefault, map[string]string{"custom2": "v"})
	wantRoute(t, "network later", attr(t, s, Touch{ClickID: "p", EventID: "r1", Network: "beta"}), "beta", RouteEvent, map[string]string{"custom2": "v"})

	// An event with nothing writes no context.
	if a := attr(t, s, Touch{ClickID: "bare", EventID: "d1", DefaultPartner: "alpha"}); a.ClickFound {
		t.Errorf("an event with nothing created a context: %+v", a.Click)
	}
	if _, ok, _ := s.LoadClick(ctx, "bare"); ok {
		t.Error("LoadClick(bare) found a context")
	}
	// A context that does not decode (edited by hand, another version) is
	// treated as empty, not as an error for every event of the click.
	if err := h.client.Set(ctx, s.clickKey("junk", "ctx"), "not json", 0).Err(); err != nil {
		t.Fatal(err)
	}
	wantRoute(t, "junk context", attr(t, s, Touch{ClickID: "junk", EventID: "r", Network: "beta"}), "beta", RouteEvent, nil)
	if c, ok, err := s.LoadClick(ctx, "junk"); err != nil || !ok || c.Network != "beta" {
		t.Errorf("junk context after a network: %+v %v %v", c, ok, err)
	}
}

// testAttributeRoutes: the order of route sources, and a redelivered event
// keeps its first route whatever the click learnt since.
func testAttributeRoutes(t *testing.T, h *harness) {
	s := h.store(Options{})
	// No network anywhere: the default, else unroutable.
	wantRoute(t, "default", attr(t, s, Touch{ClickID: "c", EventID: "d1", DefaultPartner: "alpha"}), "alpha", RouteDefault, nil)
	if a := attr(t, s, Touch{ClickID: "c", EventID: "d0"}); a.State != StateUnroutable {
		t.Errorf("no network, no default: %s, want unroutable", a.State)
	}
	// The registration arrives; d1 redelivered keeps the default partner (its
	// postback ids name it); a new event goes to the click's.
	attr(t, s, Touch{ClickID: "c", EventID: "reg", Network: "beta", Params: map[string]string{"custom2": "v"}})
	wantRoute(t, "d1 redelivered", attr(t, s, Touch{ClickID: "c", EventID: "d1", DefaultPartner: "alpha"}), "alpha", RouteDefault, nil)
	wantRoute(t, "d2", attr(t, s, Touch{ClickID: "c", EventID: "d2", DefaultPartner: "alpha"}), "beta", RouteClick, map[string]string{"custom2": "v"})
	// Batches answer like single calls.
	got, err := s.AttributeBatch(context.Background(), []Touch{
		{ClickID: "c", EventID: "d1", DefaultPartner: "alpha", At: t0},
		{ClickID: "c", EventID: "d3", At: t0},
		{ClickID: "other", EventID: "d1", DefaultPartner: "gamma", At: t0},
	})
	if err != nil || len(got) != 3 {
		t.Fatalf("AttributeBatch: %v %v", got, err)
	}
	wantRoute(t, "batch d1", got[0], "alpha", RouteDefault, nil)
	wantRoute(t, "batch d3", got[1], "beta", RouteClick, map[string]string{"custom2": "v"})
	wantRoute(t, "batch other", got[2], "gamma", RouteDefault, nil)
}

// testAttributeWaitsOnRequest: with Touch.Wait instead of a payload, the
// payload is built only for an event that is to wait, once per call, and
// the event then waits exactly as with WaitPayload; an event whose click is
// known never builds one. Single calls and batches alike, and a batch that
// mixes both.
func testAttributeWaitsOnRequest(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	calls := map[string]int{}
	touch := func(click, ev string) Touch {
		return Touch{ClickID: click, EventID: ev, DefaultPartner: "alpha", Release: true, At: t0,
			Wait: func() ([]byte, error) { calls[click+"/"+ev]++; return []byte("payload of " + ev), nil }}
	}

	// An unknown click: the event waits with the payload Wait built.
	if a := attr(t, s, touch("u", "d1")); a.State != StateWaiting {
		t.Fatalf("u/d1 on an unknown click: %s, want waiting", a.State)
	}
	if calls["u/d1"] != 1 {
		t.Errorf("u/d1: Wait called %d times, want once", calls["u/d1"])
	}
	if st, err := s.Waiting(ctx, "u", "d1"); err != nil || st != WaitPending {
		t.Fatalf("Waiting(u/d1) = %v %v, want pending", st, err)
	}
	// A known click: routed by it, and no payload is built.
	attr(t, s, Touch{ClickID: "k", EventID: "reg", Network: "beta", Registers: true})
	wantRoute(t, "k/d1", attr(t, s, touch("k", "d1")), "beta", RouteClick, nil)
	if calls["k/d1"] != 0 {
		t.Errorf("k/d1 on a known click: Wait called %d times, want never", calls["k/d1"])
	}
	// A batch: two events that wait, one on a known click, one that names
	// its own network; only the waiting ones build a payload, and every
	// result lands at its own index.
	own := touch("n", "d1")
	own.Network = "gamma"
	got, err := s.AttributeBatch(ctx, []Touch{touch("b1", "d1"), touch("k", "d2"), touch("b2", "d1"), own})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].State != StateWaiting || got[2].State != StateWaiting {
		t.Errorf("batch: b1/d1 %s, b2/d1 %s; want both waiting", got[0].State, got[2].State)
	}
	wantRoute(t, "batch k/d2", got[1], "beta", RouteClick, nil)
	wantRoute(t, "batch n/d1", got[3], "gamma", RouteEvent, nil)
	if want := map[string]int{"u/d1": 1, "b1/d1": 1, "b2/d1": 1}; !maps.Equal(calls, want) {
		t.Errorf("Wait calls %v, want %v", calls, want)
	}
	// The network arrives: the waiting events are handed over with the
	// payloads Wait built.
	a := attr(t, s, Touch{ClickID: "b1", EventID: "reg", Network: "beta", Release: true})
	if len(a.Released) != 1 || a.Released[0].EventID != "d1" || string(a.Released[0].Payload) != "payload of d1" {
		t.Errorf("b1 released %v, want d1 with its payload", a.Released)
	}
	// In one batch, an event of an unknown click, then the registration
	// that brings its network: the event's first run asks for its payload,
	// the registration's gives the click its network, and the event's second
	// run finds it: routed by the click, stored nowhere to wait, handed to
	// no one (as when the registration comes first).
	got, err = s.AttributeBatch(ctx, []Touch{touch("rb", "d1"),
		{ClickID: "rb", EventID: "reg", Network: "beta", Registers: true, Release: true, At: t0}})
	if err != nil {
		t.Fatal(err)
	}
	wantRoute(t, "rb/d1 beside its registration", got[0], "beta", RouteClick, nil)
	if len(got[1].Released) != 0 {
		t.Errorf("rb's registration released %v, want nothing", got[1].Released)
	}
	if st, err := s.Waiting(ctx, "rb", "d1"); err != nil || st != WaitMissing {
		t.Errorf("Waiting(rb/d1) = %v %v, want missing", st, err)
	}
	if calls["rb/d1"] != 1 {
		t.Errorf("rb/d1: Wait called %d times, want once (its first run asked)", calls["rb/d1"])
	}
	// A Wait that fails fails the call, and nothing waits.
	broken := touch("x", "d1")
	broken.Wait = func() ([]byte, error) { return nil, errors.New("no payload") }
	if _, err := s.Attribute(ctx, broken); err == nil || !strings.Contains(err.Error(), "no payload") {
		t.Errorf("Attribute with a failing Wait: %v, want its error", err)
	}
	if _, err := s.AttributeBatch(ctx, []Touch{touch("k", "d3"), broken}); err == nil || !strings.Contains(err.Error(), "no payload") {
		t.Errorf("AttributeBatch with a failing Wait: %v, want its error", err)
	}
	if st, err := s.Waiting(ctx, "x", "d1"); err != nil || st != WaitMissing {
		t.Errorf("Waiting(x/d1) after a failing Wait = %v %v, want missing", st, err)
	}
}

// testAttributeWaits: an event without a network waits, is handed over by
// the event that brings the click's network (never in the same script as it
// parks: one or the other sees it), and is finished once.
func testAttributeWaits(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	a := attr(t, s, Touch{ClickID: "c", EventID: "d1", DefaultPartner: "alpha", WaitPayload: []byte("p1"), Release: true})
	if a.State != StateWaiting {
		t.Fatalf("d1 without a network: %s, want waiting", a.State)
	}
	// A redelivery keeps the first payload and still waits.
	if a := attr(t, s, Touch{ClickID: "c", EventID: "d1", WaitPayload: []byte("p1-again")}); a.State != StateWaiting {
		t.Fatalf("d1 redelivered: %s, want waiting", a.State)
	}
	attr(t, s, Touch{ClickID: "c", EventID: "d2", WaitPayload: []byte("p2")})
	if st, err := s.Waiting(ctx, "c", "d1"); err != nil || st != WaitPending {
		t.Fatalf("Waiting(d1) = %v %v, want pending", st, err)
	}
	// An event without a network releases nothing: the click has none.
	if a := attr(t, s, Touch{ClickID: "c", EventID: "x", DefaultPartner: "alpha", Release: true}); len(a.Released) != 0 {
		t.Errorf("released %v without a network", a.Released)
	}
	// Without Release nothing is handed over even with a network.
	if a := attr(t, s, Touch{ClickID: "c", EventID: "n0", Network: "gamma"}); len(a.Released) != 0 || a.Click.Network != "gamma" {
		t.Errorf("n0 (no release): released %v, click %+v", a.Released, a.Click)
	}
	// The click has a network now: the next event with Release gets both.
	a = attr(t, s, Touch{ClickID: "c", EventID: "reg", Network: "gamma", Release: true})
	rel := map[string]string{}
	for _, w := range a.Released {
		rel[w.EventID] = string(w.Payload)
	}
	if !maps.Equal(rel, map[string]string{"d1": "p1", "d2": "p2"}) {
		t.Fatalf("released %v, want d1=p1 and d2=p2", rel)
	}
	// Released events route by the click (they now find its network).
	wantRoute(t, "released d1", attr(t, s, Touch{ClickID: "c", EventID: "d1"}), "gamma", RouteClick, nil)
	if p, err := s.PendingWaits(ctx, "c"); err != nil || len(p) != 2 {
		t.Errorf("PendingWaits = %v, %v; want d1 and d2", p, err)
	}
	// Handed over again until finished; finished ones never again.
	if err := s.FinishWaiting(ctx, "c", "d1", "never-waited"); err != nil {
		t.Fatal(err)
	}
	a = attr(t, s, Touch{ClickID: "c", EventID: "d9", Release: true})
	if len(a.Released) != 1 || a.Released[0].EventID != "d2" {
		t.Errorf("after finishing d1: released %v, want d2 only", a.Released)
	}
	if err := s.FinishWaiting(ctx, "c", "d2"); err != nil {
		t.Fatal(err)
	}
	if a := attr(t, s, Touch{ClickID: "c", EventID: "d10", Release: true}); len(a.Released) != 0 {
		t.Errorf("after finishing both: released %v", a.Released)
	}
	for ev, want := range map[string]WaitState{"d1": WaitFinished, "d2": WaitFinished, "never-waited": WaitMissing} {
		if st, err := s.Waiting(ctx, "c", ev); err != nil || st != want {
			t.Errorf("Waiting(%s) = %v %v, want %v", ev, st, err, want)
		}
	}
	// A registration without a network releases too: the click will tell no
	// more, so its waiting events go to the default partner, with its params.
	if a := attr(t, s, Touch{ClickID: "r", EventID: "d1", DefaultPartner: "alpha", WaitPayload: []byte("p"), Release: true}); a.State != StateWaiting {
		t.Fatalf("r/d1: %s, want waiting", a.State)
	}
	a = attr(t, s, Touch{ClickID: "r", EventID: "reg", DefaultPartner: "alpha", Registers: true, Release: true,
		Params: map[string]string{"tr": "T", "offer_id": "o"}})
	if len(a.Released) != 1 || a.Released[0].EventID != "d1" || a.Click.RegisteredAt.IsZero() {
		t.Fatalf("registration without a network: released %v, click %+v; want d1 handed over", a.Released, a.Click)
	}
	wantRoute(t, "r/d1 after the registration", attr(t, s, Touch{ClickID: "r", EventID: "d1", DefaultPartner: "alpha"}),
		"alpha", RouteDefault, map[string]string{"tr": "T", "offer_id": "o"})
	if a := attr(t, s, Touch{ClickID: "r", EventID: "d2", DefaultPartner: "alpha", WaitPayload: []byte("p")}); a.State != StateRouted {
		t.Errorf("a registered click's event: %s, want routed at once", a.State)
	}
	// Params alone (no network, no registration) do not stop the wait.
	if a := attr(t, s, Touch{ClickID: "pp", EventID: "d1", Params: map[string]string{"x": "y"}, WaitPayload: []byte("p")}); a.State != StateWaiting {
		t.Errorf("params without network or registration: %s, want waiting", a.State)
	}

	// A click with a network never parks.
	if a := attr(t, s, Touch{ClickID: "c", EventID: "d11", WaitPayload: []byte("p")}); a.State != StateRouted {
		t.Errorf("wait with a network: %s, want routed", a.State)
	}

	// Racing: parking and the network's arrival for many clicks at once;
	// every event ends either routed by the click or handed over.
	const n = 50
	type res struct {
		park, reg Attribution
	}
	out := make([]res, n)
	done := make(chan int, 2*n)
	for i := range n {
		click := "race" + string(rune('A'+i%26)) + time.Duration(i).String()
		go func() {
			out[i].park = attr(t, s, Touch{ClickID: click, EventID: "d", WaitPayload: []byte("p")})
			done <- i
		}()
		go func() {
			out[i].reg = attr(t, s, Touch{ClickID: click, EventID: "r", Network: "beta", Release: true})
			done <- i
		}()
	}
	for range 2 * n {
		<-done
	}
	for i, r := range out {
		parked := r.park.State == StateWaiting
		handed := slices.ContainsFunc(r.reg.Released, func(w WaitingEvent) bool { return w.EventID == "d" })
		if parked != handed || (!parked && (r.park.State != StateRouted || r.park.Route.Via != RouteClick)) {
			t.Errorf("race %d: deposit %s, handed over %v; want parked and handed over, or routed by the click", i, r.park.State, handed)
		}
	}
}

// testAttributeTTL: contexts, memos and waiting events live RecordTTL; a
// touch refreshes the context's TTL.
func testAttributeTTL(t *testing.T, h *harness) {
	ctx := context.Background()
	ttl := time.Hour
	s := h.store(Options{RecordTTL: ttl})
	attr(t, s, Touch{ClickID: "c", EventID: "r", Network: "beta"})
	attr(t, s, Touch{ClickID: "c", EventID: "d", DefaultPartner: "alpha"})
	attr(t, s, Touch{ClickID: "w", EventID: "d", WaitPayload: []byte("p")})
	for _, k := range []string{s.clickKey("c", "ctx"), s.clickKey("c", "route", "d"), s.clickKey("w", "await")} {
		if got := h.client.PTTL(ctx, k).Val(); got <= 0 || got > ttl {
			t.Errorf("TTL of %s = %s, want (0, %s]", k, got, ttl)
		}
	}
	// A read refreshes the TTL, with or without a network of its own (the
	// route memo is not read for the one with a network, the context is).
	for _, tc := range []Touch{{ClickID: "c", EventID: "d3"}, {ClickID: "c", EventID: "d4", Network: "beta"}} {
		k := s.clickKey("c", "ctx")
		if err := h.client.PExpire(ctx, k, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		attr(t, s, tc)
		if got := h.client.PTTL(ctx, k).Val(); got <= ttl-time.Minute || got > ttl {
			t.Errorf("%s: TTL of the context %s after a read, want (%s, %s]", tc.EventID, got, ttl-time.Minute, ttl)
		}
	}
	if h.fake == nil {
		return // the rest moves the clock
	}
	h.fake.FastForward(ttl / 2)
	attr(t, s, Touch{ClickID: "c", EventID: "d2"}) // a read refreshes
	h.fake.FastForward(ttl/2 + time.Minute)
	if _, ok, _ := s.LoadClick(ctx, "c"); !ok {
		t.Fatal("a touched context expired RecordTTL after it was written")
	}
	h.fake.FastForward(ttl)
	if _, ok, _ := s.LoadClick(ctx, "c"); ok {
		t.Fatal("the context outlived RecordTTL after its last touch")
	}
	if st, _ := s.Waiting(ctx, "w", "d"); st != WaitMissing {
		t.Errorf("waiting event after RecordTTL: %v, want missing", st)
	}
}

// testClassifyKeepsRoute: the FTD record keeps the route it was classified
// with; a later deposit's route does not replace it.
func testClassifyKeepsRoute(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	r := Route{Partner: "beta", Via: RouteClick, Params: map[string]string{"tr": "trID_1_a-b-c-d_trID", "offer_id": "o1"}}
	c, err := s.Classify(ctx, Deposit{ClickID: "c", EventID: "d1", Amount: "10", Currency: "EUR", Route: r})
	if err != nil || c.Goal != "ftd" {
		t.Fatalf("classify d1: %+v %v", c, err)
	}
	if c.FTD.Route.Partner != "beta" || c.FTD.Route.Via != RouteClick || !maps.Equal(c.FTD.Route.Params, r.Params) {
		t.Errorf("FTD route %+v, want %+v", c.FTD.Route, r)
	}
	c, err = s.Classify(ctx, Deposit{ClickID: "c", EventID: "d2", Amount: "5", Currency: "EUR", Route: Route{Partner: "alpha", Via: RouteDefault}})
	if err != nil || c.Goal != "rdep" || c.FTD.Route.Partner != "beta" || !maps.Equal(c.FTD.Route.Params, r.Params) {
		t.Fatalf("classify d2: %+v %v; want rdep with the FTD's route kept", c, err)
	}
	q, err := s.Qualify(ctx, Qualification{ClickID: "c", EventID: "q", Status: "approved", At: t0})
	if err != nil || q.FTD.Route.Partner != "beta" || !maps.Equal(q.FTD.Route.Params, r.Params) {
		t.Fatalf("qualify: %+v %v; want the FTD's route", q, err)
	}
	// Without a route (a record of an older version): empty, not an error.
	c, err = s.Classify(ctx, Deposit{ClickID: "old", EventID: "d1", Amount: "1", Currency: "EUR"})
	if err != nil || c.FTD.Route.Partner != "" || c.FTD.Route.Params != nil {
		t.Fatalf("classify without a route: %+v %v", c, err)
	}
}

// testCorruptState: state of the wrong shape or type is reported as
// permanent (IsCorrupt), an unreachable Redis is not.
func testCorruptState(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	if err := h.client.HSet(ctx, s.clickKey("wt", "ctx"), "network", "n").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Attribute(ctx, Touch{ClickID: "wt", EventID: "e", At: t0}); err == nil || !IsCorrupt(err) {
		t.Errorf("Attribute on a context of the wrong type: %v; want a corrupt-state error", err)
	}
	if _, err := s.AttributeBatch(ctx, []Touch{{ClickID: "wt", EventID: "e", At: t0}}); err == nil || !IsCorrupt(err) {
		t.Errorf("AttributeBatch on a context of the wrong type: %v; want a corrupt-state error", err)
	}
	if err := h.client.HSet(ctx, s.clickKey("bad", "ftd"), "event_id", "x", "occurred_at", "not a time").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Classify(ctx, Deposit{ClickID: "bad", EventID: "d", Amount: "1", Currency: "EUR"}); err == nil || !IsCorrupt(err) {
		t.Errorf("Classify beside an FTD record that does not parse: %v; want a corrupt-state error", err)
	}
	down := New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}), Options{Prefix: h.prefix})
	if _, err := down.Classify(ctx, Deposit{ClickID: "c", EventID: "d"}); err == nil || IsCorrupt(err) {
		t.Errorf("Classify against no Redis: %v; want an error that is not corrupt state", err)
	}
}
