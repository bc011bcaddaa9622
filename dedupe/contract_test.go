package dedupe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/internal/testinfra"
	"github.com/postbackd/postbackd/metrics"
	"github.com/postbackd/postbackd/postback"
)

// harness is one backend under test: a client, a key prefix of its own and,
// for miniredis, the fake whose clock tests move.
type harness struct {
	client redis.UniversalClient
	prefix string
	fake   *miniredis.Miniredis
}

func (h *harness) store(opts Options) *Store {
	opts.Prefix = h.prefix
	if opts.Metrics == nil {
		opts.Metrics = metrics.New(nil)
	}
	return New(h.client, opts)
}

// afterExpiry makes time pass by d and then requires cond: miniredis's
// clock is moved; a real Redis is polled until cond holds or a deadline
// well past d passes.
func (h *harness) afterExpiry(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if h.fake != nil {
		h.fake.FastForward(d + time.Millisecond)
		if !cond() {
			t.Fatalf("%s: not true after %s", what, d)
		}
		return
	}
	testinfra.WaitUntil(t, d+5*time.Second, what, cond)
}

// TestContract runs the contract suite against every backend available:
// miniredis always, a real Redis with REDIS_ADDR, a real Redis Cluster with
// REDIS_CLUSTER_ADDRS (comma separated seed addresses).
func TestContract(t *testing.T) {
	t.Run("miniredis", func(t *testing.T) {
		runContract(t, func(t *testing.T) *harness {
			m := miniredis.RunT(t)
			c := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { _ = c.Close() })
			return &harness{client: c, prefix: "t" + testinfra.Unique(), fake: m}
		})
	})
	t.Run("redis", func(t *testing.T) {
		if !testinfra.RealRedis() {
			t.Skip("REDIS_ADDR not set: no real Redis to run the contract against")
		}
		runContract(t, func(t *testing.T) *harness {
			c, prefix, fake := testinfra.Redis(t)
			return &harness{client: c, prefix: prefix, fake: fake}
		})
	})
	t.Run("cluster", func(t *testing.T) {
		addrs := os.Getenv("REDIS_CLUSTER_ADDRS")
		if addrs == "" {
			t.Skip("REDIS_CLUSTER_ADDRS not set: no real Redis Cluster to run the contract against")
		}
		runContract(t, func(t *testing.T) *harness {
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), PoolSize: 64})
			t.Cleanup(func() { _ = c.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.Ping(ctx).Err(); err != nil {
				t.Fatalf("REDIS_CLUSTER_ADDRS=%s is set but the cluster does not answer: %v", addrs, err)
			}
			return &harness{client: c, prefix: "t" + testinfra.Unique()}
		})
	})
}

// runContract is the behaviour every backend must show.
func runContract(t *testing.T, newHarness func(t *testing.T) *harness) {
	t.Run("PingAndMetrics", func(t *testing.T) {
		m := metrics.New(nil)
		s := newHarness(t).store(Options{Metrics: m})
		if err := s.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Classify(context.Background(), Deposit{ClickID: "c", EventID: "e"}); err != nil {
			t.Fatal(err)
		}
		fams, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		ops := map[string]uint64{}
		for _, f := range fams {
			if f.GetName() == "postbackd_redis_duration_seconds" {
				for _, mt := range f.GetMetric() {
					ops[mt.GetLabel()[0].GetValue()] = mt.GetHistogram().GetSampleCount()
				}
			}
		}
		if len(ops) != 2 || ops["ping"] != 1 || ops["classify"] != 1 {
			t.Fatalf("RedisSeconds samples by op %v, want ping and classify once", ops)
		}
	})
	t.Run("AttributeAccumulates", func(t *testing.T) { testAttributeAccumulates(t, newHarness(t)) })
	t.Run("AttributeRoutes", func(t *testing.T) { testAttributeRoutes(t, newHarness(t)) })
	t.Run("AttributeWaits", func(t *testing.T) { testAttributeWaits(t, newHarness(t)) })
	t.Run("AttributeWaitsOnRequest", func(t *testing.T) { testAttributeWaitsOnRequest(t, newHarness(t)) })
	t.Run("AttributeTTL", func(t *testing.T) { testAttributeTTL(t, newHarness(t)) })
	t.Run("ClassifyKeepsRoute", func(t *testing.T) { testClassifyKeepsRoute(t, newHarness(t)) })
	t.Run("CorruptState", func(t *testing.T) { testCorruptState(t, newHarness(t)) })
	t.Run("Restore", func(t *testing.T) { testRestore(t, newHarness(t)) })
	t.Run("RestoreMerges", func(t *testing.T) { testRestoreMerges(t, newHarness(t)) })
	t.Run("Inspect", func(t *testing.T) { testInspect(t, newHarness(t)) })
	t.Run("InspectGlobIDs", func(t *testing.T) { testInspectGlobIDs(t, newHarness(t)) })
	t.Run("PrepareReplay", func(t *testing.T) { testPrepareReplay(t, newHarness(t)) })
	t.Run("EmptyIDs", func(t *testing.T) { testEmptyIDs(t, newHarness(t)) })
	t.Run("Classify", func(t *testing.T) { testClassify(t, newHarness(t)) })
	t.Run("ClassifyAfterAnswerExpired", func(t *testing.T) { testClassifyAnswerExpired(t, newHarness(t)) })
	t.Run("ClassifyConcurrentFirstDeposits", func(t *testing.T) { testClassifyConcurrent(t, newHarness(t)) })
	t.Run("ClickIDsWithBraces", func(t *testing.T) { testBraces(t, newHarness(t)) })
	t.Run("Claim", func(t *testing.T) { testClaim(t, newHarness(t)) })
	t.Run("ClaimLeaseExpiry", func(t *testing.T) { testClaimLeaseExpiry(t, newHarness(t)) })
	t.Run("Qualify", func(t *testing.T) { testQualify(t, newHarness(t)) })
	t.Run("TakeOrphan", func(t *testing.T) { testTakeOrphan(t, newHarness(t)) })
	t.Run("FailFTD", func(t *testing.T) { testFailFTD(t, newHarness(t)) })
	t.Run("FailFTDAfterOrphan", func(t *testing.T) { testFailFTDAfterOrphan(t, newHarness(t)) })
	t.Run("ParkedEventID", func(t *testing.T) { testParkedEventID(t, newHarness(t)) })
	t.Run("Batches", func(t *testing.T) { testBatches(t, newHarness(t)) })
	t.Run("MixedStreamBatches", func(t *testing.T) { testMixedStreamBatches(t, newHarness(t)) })
	t.Run("ClassifyClaim", func(t *testing.T) { testClassifyClaim(t, newHarness(t)) })
	t.Run("ScriptCacheFlushed", func(t *testing.T) { testScriptFlush(t, newHarness(t)) })
	t.Run("Schedule", func(t *testing.T) { testSchedule(t, newHarness(t)) })
	t.Run("ScheduleMaxAndShards", func(t *testing.T) { testScheduleMax(t, newHarness(t)) })
}

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))

func testEmptyIDs(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	calls := map[string]func() error{
		"Attribute":      func() error { _, err := s.Attribute(ctx, Touch{ClickID: "c"}); return err },
		"AttributeBatch": func() error { _, err := s.AttributeBatch(ctx, []Touch{{EventID: "e"}}); return err },
		"FinishWaiting":  func() error { return s.FinishWaiting(ctx, "c", "") },
		"Waiting":        func() error { _, err := s.Waiting(ctx, "", "e"); return err },
		"PendingWaits":   func() error { _, err := s.PendingWaits(ctx, ""); return err },
		"LoadClick":      func() error { _, _, err := s.LoadClick(ctx, ""); return err },
		"Classify":       func() error { _, err := s.Classify(ctx, Deposit{ClickID: "c"}); return err },
		"Claim":          func() error { _, err := s.Claim(ctx, "c", "", time.Second); return err },
		"MarkDelivered":  func() error { _, err := s.MarkDelivered(ctx, "", "p", Delivery{}, nil); return err },
		"Release":        func() error { return s.Release(ctx, "c", "", "t") },
		"Qualify":        func() error { _, err := s.Qualify(ctx, Qualification{ClickID: "c", EventID: "e"}); return err },
		"TakeOrphan":     func() error { _, _, err := s.TakeOrphan(ctx, "c", ""); return err },
		"FailFTD":        func() error { _, err := s.FailFTD(ctx, "c", "", "refused"); return err },
		"FailFTD reason": func() error { _, err := s.FailFTD(ctx, "c", "d", ""); return err },
		"Schedule":       func() error { return s.Schedule(ctx, "", t0, nil) },
		"ScheduleBatch":  func() error { _, err := s.ScheduleBatch(ctx, []ScheduledJob{{ID: "j"}, {}}); return err },
		"QualifyBatch": func() error {
			_, err := s.QualifyBatch(ctx, []Qualification{{ClickID: "c", EventID: "e", Status: "approved"}, {ClickID: "c", Status: "approved"}})
			return err
		},
		"ClassifyClaimBatch": func() error {
			_, err := s.ClassifyClaimBatch(ctx, []ClassifyClaim{{Deposit: Deposit{ClickID: "c", EventID: "e"}, FTDPostbackID: "f", RDPostbackID: "r"}})
			return err
		},
		"FinishWaitingBatch": func() error {
			_, err := s.FinishWaitingBatch(ctx, []FinishedWaits{{EventIDs: []string{"e"}}})
			return err
		},
		"Ack": func() error { return s.Ack(ctx, "") },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrEmptyID) {
			t.Errorf("%s with an empty id: err %v, want ErrEmptyID", name, err)
		}
	}
}

func testClassify(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	first := Deposit{ClickID: "clk", EventID: "d1", Amount: "10.50", Currency: "EUR", OccurredAt: t0}
	steps := []struct {
		name         string
		d            Deposit
		wantGoal     postback.Goal
		wantRepeated bool
	}{
		{"first deposit is the FTD", first, postback.GoalFTD, false},
		{"second deposit is an rdep", Deposit{ClickID: "clk", EventID: "d2", Amount: "20", Currency: "USD", OccurredAt: t0.Add(time.Hour)}, postback.GoalRD, false},
		{"redelivered FTD is the FTD again", first, postback.GoalFTD, true},
		{"redelivered rdep is an rdep again", Deposit{ClickID: "clk", EventID: "d2", Amount: "20", Currency: "USD"}, postback.GoalRD, true},
		{"third deposit is an rdep", Deposit{ClickID: "clk", EventID: "d3", Amount: "1", Currency: "EUR"}, postback.GoalRD, false},
		{"a redelivered FTD with other values keeps the record", Deposit{ClickID: "clk", EventID: "d1", Amount: "999", Currency: "GBP"}, postback.GoalFTD, true},
		{"another click has its own FTD", Deposit{ClickID: "other", EventID: "d2", Amount: "5", Currency: "EUR", OccurredAt: t0}, postback.GoalFTD, false},
	}
	for _, st := range steps {
		c, err := s.Classify(ctx, st.d)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if c.Goal != st.wantGoal || c.Repeated != st.wantRepeated {
			t.Errorf("%s: goal %s repeated %v, want %s %v", st.name, c.Goal, c.Repeated, st.wantGoal, st.wantRepeated)
		}
		if st.d.ClickID == "clk" {
			f := c.FTD
			if f.EventID != "d1" || f.Amount != "10.50" || f.Currency != "EUR" || !f.OccurredAt.Equal(t0) || f.Delivered || f.Status != "" {
				t.Errorf("%s: FTD record %+v, want d1 10.50 EUR at %s, undelivered", st.name, f, t0)
			}
		}
	}
	// The FTD record never expires.
	if ttl := h.client.PTTL(ctx, s.clickKey("clk", "ftd")).Val(); ttl != -1 {
		t.Errorf("FTD record TTL %v, want none", ttl)
	}
	if ttl := h.client.PTTL(ctx, s.clickKey("clk", "ans", "d2")).Val(); ttl <= 0 || ttl > DefaultRecordTTL {
		t.Errorf("answer TTL %s, want (0, %s]", ttl, DefaultRecordTTL)
	}
}

func testClassifyAnswerExpired(t *testing.T, h *harness) {
	ctx := context.Background()
	ttl := 200 * time.Millisecond
	s := h.store(Options{RecordTTL: ttl})
	for _, d := range []Deposit{{ClickID: "clk", EventID: "d1", Amount: "1", Currency: "EUR"}, {ClickID: "clk", EventID: "d2", Amount: "2", Currency: "EUR"}} {
		if _, err := s.Classify(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	h.afterExpiry(t, ttl, "answers expired", func() bool {
		return h.client.Exists(ctx, s.clickKey("clk", "ans", "d1"), s.clickKey("clk", "ans", "d2")).Val() == 0
	})
	// Without answers the FTD record still tells the FTD from the rdep.
	for _, tc := range []struct {
		id   string
		want postback.Goal
		rep  bool
	}{{"d1", postback.GoalFTD, true}, {"d2", postback.GoalRD, false}} {
		c, err := s.Classify(ctx, Deposit{ClickID: "clk", EventID: tc.id, Amount: "1", Currency: "EUR"})
		if err != nil {
			t.Fatal(err)
		}
		if c.Goal != tc.want || c.Repeated != tc.rep {
			t.Errorf("%s after expiry: %s repeated %v, want %s %v", tc.id, c.Goal, c.Repeated, tc.want, tc.rep)
		}
	}
}

func testClassifyConcurrent(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	for round := range 3 {
		click := fmt.Sprintf("race-%d", round)
		const n = 50
		goals := make([]postback.Goal, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c, err := s.Classify(ctx, Deposit{ClickID: click, EventID: fmt.Sprintf("e%d", i), Amount: fmt.Sprint(i + 1), Currency: "EUR", OccurredAt: t0})
				goals[i], errs[i] = c.Goal, err
			}()
		}
		close(start)
		wg.Wait()
		ftds := 0
		winner := -1
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("classify e%d: %v", i, errs[i])
			}
			if goals[i] == postback.GoalFTD {
				ftds++
				winner = i
			}
		}
		if ftds != 1 {
			t.Fatalf("%s: %d FTDs among %d concurrent first deposits, want exactly 1", click, ftds, n)
		}
		c, err := s.Classify(ctx, Deposit{ClickID: click, EventID: "late", Amount: "1", Currency: "EUR"})
		if err != nil {
			t.Fatal(err)
		}
		if c.Goal != postback.GoalRD || c.FTD.EventID != fmt.Sprintf("e%d", winner) || c.FTD.Amount != fmt.Sprint(winner+1) {
			t.Fatalf("%s: later deposit %s with FTD %+v, want rdep with FTD e%d", click, c.Goal, c.FTD, winner)
		}
	}
}

func testBraces(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	// Each id must be a click of its own: an FTD for every one.
	ids := []string{"a}b", "a}c", "{a}", "{a", "a{b}c", "a{c}c", "c:x", "h:" + strings.Repeat("0", 40), "}", "{", "{}", "x y/é"}
	for _, id := range ids {
		c, err := s.Classify(ctx, Deposit{ClickID: id, EventID: "e1", Amount: "1", Currency: "EUR"})
		if err != nil {
			t.Fatalf("click %q: %v", id, err)
		}
		if c.Goal != postback.GoalFTD || c.Repeated {
			t.Errorf("click %q: %s repeated %v, want a fresh FTD", id, c.Goal, c.Repeated)
		}
		r, err := s.Qualify(ctx, Qualification{ClickID: id, EventID: "q1", Status: postback.StatusApproved})
		if err != nil || r.Decision != DecideWait || !r.FTDExists || r.FTD.EventID != "e1" {
			t.Errorf("click %q: qualify = %+v, %v; want wait on its own FTD", id, r, err)
		}
	}
	// Raw ids with braces would make keys ambiguous: click "a" with event
	// "e1}:ftd" and click "a}:ans:e1" would share the key
	// "P:{c:a}:ans:e1}:ftd". Each must keep records of its own.
	for _, d := range []Deposit{
		{ClickID: "a", EventID: "e1}:ftd", Amount: "1", Currency: "EUR"},
		{ClickID: "a}:ans:e1", EventID: "x", Amount: "2", Currency: "EUR"},
	} {
		c, err := s.Classify(ctx, d)
		if err != nil {
			t.Fatalf("click %q event %q: %v", d.ClickID, d.EventID, err)
		}
		if c.Goal != postback.GoalFTD || c.Repeated || c.FTD.EventID != d.EventID {
			t.Errorf("click %q event %q: %+v, want its own fresh FTD", d.ClickID, d.EventID, c)
		}
	}
}

func testClaim(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	lease := time.Minute
	claim := func(want ClaimState) ClaimResult {
		t.Helper()
		r, err := s.Claim(ctx, "clk", "pb1", lease)
		if err != nil {
			t.Fatal(err)
		}
		if r.State != want {
			t.Fatalf("claim: %s, want %s", r.State, want)
		}
		return r
	}
	a := claim(ClaimAcquired)
	if a.Token == "" {
		t.Fatal("acquired claim without a token")
	}
	held := claim(ClaimHeld)
	if held.Token != "" || held.RetryAfter <= 0 || held.RetryAfter > lease {
		t.Fatalf("held claim: %+v, want no token and RetryAfter in (0, %s]", held, lease)
	}
	if err := s.Release(ctx, "clk", "pb1", "not-the-token"); err != nil {
		t.Fatal(err)
	}
	claim(ClaimHeld) // a wrong token released nothing
	if err := s.Release(ctx, "clk", "pb1", a.Token); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "clk", "pb1", a.Token); err != nil { // twice is safe
		t.Fatal(err)
	}
	b := claim(ClaimAcquired)
	if b.Token == a.Token {
		t.Fatal("a new claim reused the old token")
	}
	// Another postback of the same click is independent.
	if r, err := s.Claim(ctx, "clk", "pb2", lease); err != nil || r.State != ClaimAcquired {
		t.Fatalf("claim pb2: %+v, %v", r, err)
	}
	d := Delivery{HTTPStatus: 200, Attempts: 3, DeliveredAt: t0, URL: "https://t.example/conv?click_id=clk&token=REDACTED"}
	if p, err := s.MarkDelivered(ctx, "clk", "pb1", d, nil); err != nil || p != nil {
		t.Fatalf("MarkDelivered = %v, %v", p, err)
	}
	// A second mark (say by a holder whose lease had expired) keeps the first record.
	if _, err := s.MarkDelivered(ctx, "clk", "pb1", Delivery{HTTPStatus: 204, Attempts: 1}, nil); err != nil {
		t.Fatal(err)
	}
	got := claim(ClaimDelivered)
	if got.Delivery.HTTPStatus != 200 || got.Delivery.Attempts != 3 || !got.Delivery.DeliveredAt.Equal(t0) || got.Delivery.URL != d.URL {
		t.Fatalf("delivered claim holds %+v, want %+v", got.Delivery, d)
	}
	if h.client.Exists(ctx, s.clickKey("clk", "lease", "pb1")).Val() != 0 {
		t.Fatal("lease kept after delivery")
	}
	if ttl := h.client.PTTL(ctx, s.clickKey("clk", "done", "pb1")).Val(); ttl <= DefaultRecordTTL-time.Minute || ttl > DefaultRecordTTL {
		t.Fatalf("delivered mark TTL %s, want (%s, %s]", ttl, DefaultRecordTTL-time.Minute, DefaultRecordTTL)
	}
	// MarkDelivered naming a deposit that is not the click's FTD (its record
	// lost, say) leaves the FTD record alone but records the delivery: the
	// partner accepted it, and a claim must never let it be sent again.
	ftdBefore := h.client.HGetAll(ctx, s.clickKey("clk", "ftd")).Val()
	if _, err := s.MarkDelivered(ctx, "clk", "pb3", d, &FTDDelivered{EventID: "nope"}); !errors.Is(err, ErrNotFTD) {
		t.Fatalf("MarkDelivered(wrong FTD) err %v, want ErrNotFTD", err)
	}
	if r, err := s.Claim(ctx, "clk", "pb3", lease); err != nil || r.State != ClaimDelivered || r.Delivery.HTTPStatus != 200 {
		t.Fatalf("claim after a refused FTD mark: %+v, %v; want delivered", r, err)
	}
	if after := h.client.HGetAll(ctx, s.clickKey("clk", "ftd")).Val(); fmt.Sprint(after) != fmt.Sprint(ftdBefore) {
		t.Fatalf("a refused FTD mark changed the FTD record: %v -> %v", ftdBefore, after)
	}
}

func testClaimLeaseExpiry(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	// The same for a postback that is not the FTD (marked by plain
	// commands) and for the click's FTD (marked by a script).
	if _, err := s.Classify(ctx, Deposit{ClickID: "clk", EventID: "d1", Amount: "1", Currency: "EUR", OccurredAt: t0}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pb  string
		ftd *FTDDelivered
	}{{"pb", nil}, {"pb-ftd", &FTDDelivered{EventID: "d1"}}} {
		lease := 200 * time.Millisecond
		a, err := s.Claim(ctx, "clk", tc.pb, lease)
		if err != nil || a.State != ClaimAcquired {
			t.Fatalf("%s: claim: %+v, %v", tc.pb, a, err)
		}
		var b ClaimResult
		h.afterExpiry(t, lease, "claim acquirable after the lease", func() bool {
			b, err = s.Claim(ctx, "clk", tc.pb, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			return b.State == ClaimAcquired
		})
		// The first holder's late success is still recorded (a delivery is
		// a fact) and ends the new holder's lease: from now on every claim
		// finds the delivery, so the lease guards nothing.
		if _, err := s.MarkDelivered(ctx, "clk", tc.pb, Delivery{HTTPStatus: 200, Attempts: 1, DeliveredAt: t0}, tc.ftd); err != nil {
			t.Fatalf("%s: %v", tc.pb, err)
		}
		if n := h.client.Exists(ctx, s.clickKey("clk", "lease", tc.pb)).Val(); n != 0 {
			t.Fatalf("%s: lease kept after a late holder's mark", tc.pb)
		}
		if r, err := s.Claim(ctx, "clk", tc.pb, time.Minute); err != nil || r.State != ClaimDelivered || r.Delivery.HTTPStatus != 200 {
			t.Fatalf("%s: claim after late mark: %+v, %v; want delivered", tc.pb, r, err)
		}
		// The second holder's send ends in a mark that keeps the first
		// answer, or a release that finds nothing to release.
		if _, err := s.MarkDelivered(ctx, "clk", tc.pb, Delivery{HTTPStatus: 204, Attempts: 2}, tc.ftd); err != nil {
			t.Fatalf("%s: %v", tc.pb, err)
		}
		if err := s.Release(ctx, "clk", tc.pb, b.Token); err != nil {
			t.Fatal(err)
		}
		if r, err := s.Claim(ctx, "clk", tc.pb, time.Minute); err != nil || r.State != ClaimDelivered || r.Delivery.HTTPStatus != 200 || r.Delivery.Attempts != 1 {
			t.Fatalf("%s: claim after the second holder: %+v, %v; want the first delivery", tc.pb, r, err)
		}
	}
}

// deliverFTD classifies a deposit as the click's FTD, claims its postback
// and marks it delivered, returning what MarkDelivered released.
func deliverFTD(t *testing.T, s *Store, click, event string) *Parked {
	t.Helper()
	ctx := context.Background()
	c, err := s.Classify(ctx, Deposit{ClickID: click, EventID: event, Amount: "25.00", Currency: "BRL", OccurredAt: t0})
	if err != nil || c.Goal != postback.GoalFTD {
		t.Fatalf("classify %s: %+v, %v; want ftd", event, c, err)
	}
	pb := postback.NewID("net", postback.GoalFTD, event, postback.StatusPending)
	r, err := s.Claim(ctx, click, pb, time.Minute)
	if err != nil || r.State != ClaimAcquired {
		t.Fatalf("claim FTD postback: %+v, %v", r, err)
	}
	p, err := s.MarkDelivered(ctx, click, pb, Delivery{HTTPStatus: 200, Attempts: 1, DeliveredAt: t0}, &FTDDelivered{EventID: event})
	if err != nil {
		t.Fatalf("mark FTD delivered: %v", err)
	}
	return p
}

func testQualify(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	q := func(click, event, status string) QualifyResult {
		t.Helper()
		r, err := s.Qualify(ctx, Qualification{ClickID: click, EventID: event, Status: status, Payload: []byte(`{"q":"` + event + `"}`), At: t0})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	check := func(step string, r QualifyResult, d Decision, repeated, ftdExists bool, existing string) {
		t.Helper()
		if r.Decision != d || r.Repeated != repeated || r.FTDExists != ftdExists || r.ExistingStatus != existing {
			t.Errorf("%s: %s repeated %v ftd %v existing %q; want %s %v %v %q",
				step, r.Decision, r.Repeated, r.FTDExists, r.ExistingStatus, d, repeated, ftdExists, existing)
		}
	}
	const A, R = postback.StatusApproved, postback.StatusRejected

	// Qualification before its deposit waits, then is released by the FTD's delivery.
	check("before deposit", q("early", "q1", A), DecideWait, false, false, "")
	check("same status again", q("early", "q2", A), DecideWait, true, false, "")
	check("other status while parked", q("early", "q3", R), DecideConflict, false, false, A)
	if _, err := s.Classify(ctx, Deposit{ClickID: "early", EventID: "d1", Amount: "25.00", Currency: "BRL", OccurredAt: t0}); err != nil {
		t.Fatal(err)
	}
	r := q("early", "q1", A)
	check("FTD classified, not delivered", r, DecideWait, true, true, "")
	if r.FTD.EventID != "d1" || r.FTD.Delivered {
		t.Errorf("wait result FTD %+v, want d1 undelivered", r.FTD)
	}
	pb := postback.NewID("net", postback.GoalFTD, "d1", postback.StatusPending)
	cl, err := s.Claim(ctx, "early", pb, time.Minute)
	if err != nil || cl.State != ClaimAcquired {
		t.Fatalf("claim: %+v, %v", cl, err)
	}
	p, err := s.MarkDelivered(ctx, "early", pb, Delivery{HTTPStatus: 200}, &FTDDelivered{EventID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	if p == nil || p.EventID != "q1" || p.Status != A || !bytes.Equal(p.Payload, []byte(`{"q":"q1"}`)) || !p.ParkedAt.Equal(t0) {
		t.Fatalf("MarkDelivered(ftd) released %+v, want q1 approved with its payload", p)
	}
	// A repeat (lost reply, crash before the status change went out) gets
	// the same qualification again; the status change's claim dedupes.
	if p, err := s.MarkDelivered(ctx, "early", pb, Delivery{HTTPStatus: 200}, &FTDDelivered{EventID: "d1"}); err != nil || p == nil || p.EventID != "q1" {
		t.Fatalf("second MarkDelivered(ftd) = %+v, %v; want q1 again", p, err)
	}
	// A delivered FTD is not failed, and a released qualification is not
	// dead-lettered.
	if p, err := s.FailFTD(ctx, "early", "d1", "refused"); err != nil || p != nil {
		t.Fatalf("FailFTD after release = %+v, %v; want nothing", p, err)
	}
	r = q("early", "q2", A)
	check("same status after release", r, DecideSend, true, true, "")
	if r.FTD.Failure != "" {
		t.Errorf("FTD after FailFTD on a delivered FTD %+v, want no failure", r.FTD)
	}
	if r.FTD.Status != A || r.FTD.StatusEventID != "q1" || !r.FTD.Delivered || r.FTD.Amount != "25.00" || r.FTD.Currency != "BRL" {
		t.Errorf("FTD after release %+v, want approved by q1, delivered, 25.00 BRL", r.FTD)
	}
	check("contradicting status after release", q("early", "q3", R), DecideConflict, false, true, A)
	if p, st, err := s.TakeOrphan(ctx, "early", "q1"); err != nil || st != OrphanGone || p != nil {
		t.Errorf("TakeOrphan after release: %v %s %v; want gone", p, st, err)
	}

	// FTD delivered first: the qualification is sent at once.
	if p := deliverFTD(t, s, "late", "d9"); p != nil {
		t.Fatalf("nothing parked, but MarkDelivered released %+v", p)
	}
	r = q("late", "q1", R)
	check("after delivered FTD", r, DecideSend, false, true, "")
	if r.FTD.EventID != "d9" || r.FTD.Amount != "25.00" || r.FTD.Currency != "BRL" || r.FTD.Status != R || r.FTD.StatusEventID != "q1" {
		t.Errorf("send result FTD %+v, want d9 25.00 BRL rejected by q1", r.FTD)
	}
	check("redelivered", q("late", "q1", R), DecideSend, true, true, "")
	check("contradicting", q("late", "q2", A), DecideConflict, false, true, R)
	if h.client.Exists(ctx, s.clickKey("late", "parked")).Val() != 0 {
		t.Error("a qualification was parked although its FTD was delivered")
	}
}

func testTakeOrphan(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	park := func(click, event string) {
		t.Helper()
		r, err := s.Qualify(ctx, Qualification{ClickID: click, EventID: event, Status: postback.StatusApproved, Payload: []byte("resume-" + event), At: t0})
		if err != nil || r.Decision != DecideWait {
			t.Fatalf("park: %+v, %v", r, err)
		}
	}
	steps := []struct {
		name    string
		setup   func()
		click   string
		event   string
		want    OrphanState
		wantPay string
	}{
		{"nothing parked: lapsed", func() {}, "none", "q1", OrphanLapsed, ""},
		{"no FTD: taken", func() { park("orphan", "q1") }, "orphan", "q1", OrphanTaken, "resume-q1"},
		{"taken twice: the same orphan again", func() {}, "orphan", "q1", OrphanTaken, "resume-q1"},
		{"other event parked: q2 lapsed", func() { park("other", "q1") }, "other", "q2", OrphanLapsed, ""},
		{"parked record lost: lapsed", func() {
			park("lost", "q1")
			if err := h.client.Del(ctx, s.clickKey("lost", "parked")).Err(); err != nil {
				t.Fatal(err)
			}
		}, "lost", "q1", OrphanLapsed, ""},
		{"FTD not delivered: pending", func() {
			park("pending", "q1")
			if _, err := s.Classify(ctx, Deposit{ClickID: "pending", EventID: "d1", Amount: "1", Currency: "EUR"}); err != nil {
				t.Fatal(err)
			}
		}, "pending", "q1", OrphanFTDPending, ""},
		{"still pending", func() {}, "pending", "q1", OrphanFTDPending, ""},
	}
	for _, st := range steps {
		st.setup()
		p, state, err := s.TakeOrphan(ctx, st.click, st.event)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if state != st.want || (p != nil) != (st.wantPay != "") || (p != nil && (string(p.Payload) != st.wantPay || p.EventID != st.event)) {
			t.Errorf("%s: %+v %s, want %s with payload %q", st.name, p, state, st.want, st.wantPay)
		}
	}
	// A taken orphan keeps its TTL under its own key and frees the parking
	// place: a later qualification of the click parks afresh.
	if ttl := h.client.PTTL(ctx, s.clickKey("orphan", "orphan", "q1")).Val(); ttl <= 0 || ttl > DefaultRecordTTL {
		t.Errorf("orphan record TTL %s, want (0, %s]", ttl, DefaultRecordTTL)
	}
	if r, err := s.Qualify(ctx, Qualification{ClickID: "orphan", EventID: "q2", Status: postback.StatusRejected, At: t0}); err != nil ||
		r.Decision != DecideWait || r.Repeated || r.ParkedEventID != "q2" {
		t.Fatalf("qualify after the orphan: %+v, %v; want q2 parked afresh", r, err)
	}
	if p, st, err := s.TakeOrphan(ctx, "orphan", "q1"); err != nil || st != OrphanTaken || p == nil || string(p.Payload) != "resume-q1" {
		t.Fatalf("TakeOrphan(q1) with q2 parked: %+v %s %v; want q1 again", p, st, err)
	}
	// A redelivered orphan parks again: its wait starts over and the next
	// TakeOrphan judges the new wait.
	if r, err := s.Qualify(ctx, Qualification{ClickID: "other", EventID: "q1", Status: postback.StatusApproved, Payload: []byte("again"), At: t0}); err != nil ||
		r.Decision != DecideWait || !r.Repeated || r.ParkedEventID != "q1" {
		t.Fatalf("redelivered parked q1: %+v, %v; want wait, repeated, q1 parked", r, err)
	}
	if p, st, err := s.TakeOrphan(ctx, "other", "q1"); err != nil || st != OrphanTaken || string(p.Payload) != "resume-q1" {
		t.Fatalf("TakeOrphan(other q1): %+v %s %v; want taken", p, st, err)
	}
	if r, err := s.Qualify(ctx, Qualification{ClickID: "other", EventID: "q1", Status: postback.StatusApproved, Payload: []byte("again"), At: t0.Add(time.Hour)}); err != nil ||
		r.Decision != DecideWait || r.Repeated || r.ParkedEventID != "q1" || !r.ParkedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("q1 redelivered after its orphan: %+v, %v; want parked afresh", r, err)
	}
	if h.client.Exists(ctx, s.clickKey("other", "orphan", "q1")).Val() != 0 {
		t.Error("the orphan record survived its event parking again")
	}
	if p, st, err := s.TakeOrphan(ctx, "other", "q1"); err != nil || st != OrphanTaken || string(p.Payload) != "again" {
		t.Fatalf("TakeOrphan after q1 parked again: %+v %s %v; want the new wait taken", p, st, err)
	}

	// A failed FTD counts as no FTD. (FailFTD dead-letters what is parked
	// itself, so a waiting qualification beside a failed FTD is written by
	// hand here.)
	park("failed", "q1")
	if _, err := s.Classify(ctx, Deposit{ClickID: "failed", EventID: "d1", Amount: "1", Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if err := h.client.HSet(ctx, s.clickKey("failed", "ftd"), "failed", "refused").Err(); err != nil {
		t.Fatal(err)
	}
	if p, st, err := s.TakeOrphan(ctx, "failed", "q1"); err != nil || st != OrphanTaken || p == nil || p.EventID != "q1" {
		t.Fatalf("TakeOrphan beside a failed FTD: %+v %s %v; want taken", p, st, err)
	}
}

// testFailFTD: FailFTD marks the FTD failed and dead-letters the waiting
// qualification, idempotently; what follows a failure.
func testFailFTD(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	const A, R = postback.StatusApproved, postback.StatusRejected
	qualify := func(click, event, status string) QualifyResult {
		t.Helper()
		r, err := s.Qualify(ctx, Qualification{ClickID: click, EventID: event, Status: status, Payload: []byte("resume-" + event), At: t0})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	classify := func(click, event string) {
		t.Helper()
		if _, err := s.Classify(ctx, Deposit{ClickID: click, EventID: event, Amount: "5.00", Currency: "EUR", OccurredAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	ftd := func(click string) FTDRecord {
		t.Helper()
		c, err := s.Classify(ctx, Deposit{ClickID: click, EventID: "probe", Amount: "1", Currency: "EUR"})
		if err != nil || c.Goal != postback.GoalRD {
			t.Fatalf("probe deposit: %+v, %v; want rdep", c, err)
		}
		return c.FTD
	}

	// Not the FTD: refused, nothing written.
	if _, err := s.FailFTD(ctx, "none", "d1", "refused"); !errors.Is(err, ErrNotFTD) {
		t.Fatalf("FailFTD without an FTD record: %v, want ErrNotFTD", err)
	}
	if h.client.Exists(ctx, s.clickKey("none", "ftd")).Val() != 0 {
		t.Fatal("FailFTD without an FTD record created one")
	}
	classify("wrong", "d1")
	if _, err := s.FailFTD(ctx, "wrong", "d2", "refused"); !errors.Is(err, ErrNotFTD) {
		t.Fatalf("FailFTD naming another deposit: %v, want ErrNotFTD", err)
	}
	if f := ftd("wrong"); f.Failure != "" {
		t.Fatalf("FTD after a refused FailFTD: %+v, want not failed", f)
	}

	// Failed with nothing parked: later qualifications are decided at once.
	classify("bare", "d1")
	for i, reason := range []string{"refused", "again"} {
		if p, err := s.FailFTD(ctx, "bare", "d1", reason); err != nil || p != nil {
			t.Fatalf("FailFTD #%d with nothing parked: %+v, %v; want nil", i+1, p, err)
		}
	}
	for _, st := range []string{A, R, A} {
		r := qualify("bare", "q1", st)
		if r.Decision != DecideFTDFailed || r.Repeated || r.ParkedEventID != "" || r.FTD.Failure != "refused" || r.FTD.EventID != "d1" {
			t.Errorf("qualify %s after the failure: %+v; want ftd_failed (first reason kept), nothing parked", st, r)
		}
	}
	if h.client.Exists(ctx, s.clickKey("bare", "parked")).Val() != 0 {
		t.Error("a qualification was parked beside a failed FTD")
	}
	if p, st, err := s.TakeOrphan(ctx, "bare", "q1"); err != nil || st != OrphanLapsed || p != nil {
		t.Errorf("TakeOrphan beside a failed FTD, nothing ever parked: %+v %s %v; want lapsed", p, st, err)
	}

	// Failed with a qualification waiting: it is dead-lettered, and handed
	// back on every repeat.
	if r := qualify("waiting", "q1", A); r.Decision != DecideWait {
		t.Fatalf("park: %+v", r)
	}
	classify("waiting", "d1")
	for i, reason := range []string{"refused", "too_old", "refused"} {
		p, err := s.FailFTD(ctx, "waiting", "d1", reason)
		if err != nil || p == nil || p.EventID != "q1" || p.Status != A || string(p.Payload) != "resume-q1" || !p.ParkedAt.Equal(t0) {
			t.Fatalf("FailFTD #%d: %+v, %v; want q1 with its payload", i+1, p, err)
		}
	}
	if f := ftd("waiting"); f.Failure != "refused" || f.Delivered || f.Status != "" {
		t.Errorf("FTD after FailFTD: %+v, want failed (first reason), undelivered, no status", f)
	}
	if ttl := h.client.PTTL(ctx, s.clickKey("waiting", "parked")).Val(); ttl <= 0 || ttl > DefaultRecordTTL {
		t.Errorf("dead-lettered record TTL %s, want (0, %s]", ttl, DefaultRecordTTL)
	}
	for _, tc := range []struct{ event, status string }{{"q1", A}, {"q2", A}, {"q3", R}} {
		if r := qualify("waiting", tc.event, tc.status); r.Decision != DecideFTDFailed || r.Repeated || r.ParkedEventID != "" {
			t.Errorf("qualify %s %s after the failure: %+v; want ftd_failed, not waiting", tc.event, tc.status, r)
		}
	}
	if p, st, err := s.TakeOrphan(ctx, "waiting", "q1"); err != nil || st != OrphanGone || p != nil {
		t.Errorf("TakeOrphan of a qualification dead-lettered with its FTD: %+v %s %v; want gone", p, st, err)
	}
	if p, err := s.FailFTD(ctx, "waiting", "d1", "refused"); err != nil || p == nil || p.EventID != "q1" {
		t.Errorf("FailFTD after TakeOrphan: %+v, %v; want q1 still", p, err)
	}

	// The FTD delivered after all (a redelivered deposit the partner took):
	// a delivery is a fact, but the dead-lettered qualification stays so.
	if p := deliverFTD(t, s, "waiting", "d1"); p != nil {
		t.Fatalf("MarkDelivered(ftd) released %+v, dead-lettered before", p)
	}
	if rel := h.client.HGet(ctx, s.clickKey("waiting", "parked"), "released").Val(); rel != "2" {
		t.Errorf("parked record released=%q after the delivery, want 2 (dead-lettered)", rel)
	}
	if p, err := s.FailFTD(ctx, "waiting", "d1", "refused"); err != nil || p != nil {
		t.Errorf("FailFTD of a delivered FTD: %+v, %v; want nil", p, err)
	}
	r := qualify("waiting", "q4", R)
	if r.Decision != DecideSend || r.Repeated || !r.FTD.Delivered || r.FTD.Status != R || r.FTD.StatusEventID != "q4" {
		t.Errorf("qualify after the late delivery: %+v; want send, q4 deciding", r)
	}
}

// testFailFTDAfterOrphan: a qualification dead-lettered as an orphan is not
// dead-lettered again by its FTD's failure, and the reverse.
func testFailFTDAfterOrphan(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	if r, err := s.Qualify(ctx, Qualification{ClickID: "c", EventID: "q1", Status: postback.StatusApproved, Payload: []byte("p1"), At: t0}); err != nil || r.Decision != DecideWait {
		t.Fatalf("park: %+v, %v", r, err)
	}
	if p, st, err := s.TakeOrphan(ctx, "c", "q1"); err != nil || st != OrphanTaken || p == nil {
		t.Fatalf("TakeOrphan: %+v %s %v", p, st, err)
	}
	if _, err := s.Classify(ctx, Deposit{ClickID: "c", EventID: "d1", Amount: "1", Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if p, err := s.FailFTD(ctx, "c", "d1", "refused"); err != nil || p != nil {
		t.Fatalf("FailFTD after the orphan: %+v, %v; want nil (dead-lettered as an orphan)", p, err)
	}
	if p, st, err := s.TakeOrphan(ctx, "c", "q1"); err != nil || st != OrphanTaken || string(p.Payload) != "p1" {
		t.Fatalf("TakeOrphan repeated after FailFTD: %+v %s %v; want q1 again", p, st, err)
	}
}

// testParkedEventID: Qualify names the waiting qualification, so a
// redelivery of the parked event is told from another one of its status.
func testParkedEventID(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	const A, R = postback.StatusApproved, postback.StatusRejected
	for _, st := range []struct {
		name, event, status string
		at                  time.Time
		want                Decision
		repeated            bool
		parked              string
	}{
		{"first parks", "q1", A, t0, DecideWait, false, "q1"},
		{"redelivered", "q1", A, t0.Add(time.Minute), DecideWait, true, "q1"},
		{"same status, other event", "q2", A, t0.Add(time.Minute), DecideWait, true, "q1"},
		{"other status", "q3", R, t0.Add(time.Minute), DecideConflict, false, "q1"},
	} {
		r, err := s.Qualify(ctx, Qualification{ClickID: "c", EventID: st.event, Status: st.status, At: st.at})
		if err != nil {
			t.Fatal(err)
		}
		if r.Decision != st.want || r.Repeated != st.repeated || r.ParkedEventID != st.parked || !r.ParkedAt.Equal(t0) {
			t.Errorf("%s: %+v; want %s repeated %v, parked %s at %s", st.name, r, st.want, st.repeated, st.parked, t0)
		}
	}
	p := deliverFTD(t, s, "c", "d1")
	if p == nil || p.EventID != "q1" {
		t.Fatalf("released %+v, want q1 (the first)", p)
	}
	if r, err := s.Qualify(ctx, Qualification{ClickID: "c", EventID: "q2", Status: A, At: t0}); err != nil ||
		r.Decision != DecideSend || !r.Repeated || r.FTD.StatusEventID != "q1" || r.ParkedEventID != "" {
		t.Fatalf("q2 after the release: %+v, %v; want send, repeated, decided by q1", r, err)
	}
}

func jobIDs(jobs []Job) []string {
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	return ids
}

func testSchedule(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{Shards: 1}) // one shard: a total order to check
	base := time.UnixMilli(1_800_000_000_000)
	lease := 30 * time.Second
	sched := func(id string, due time.Duration, payload string) {
		t.Helper()
		if err := s.Schedule(ctx, id, base.Add(due), []byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	take := func(at time.Duration, max int) []Job {
		t.Helper()
		jobs, err := s.TakeDue(ctx, base.Add(at), lease, max)
		if err != nil {
			t.Fatal(err)
		}
		return jobs
	}
	sched("j2", 2*time.Second, "two")
	sched("j1", 1*time.Second, "one|with\x00bytes")
	sched("j3", 10*time.Second, "three")
	sched("j0", 0, "")
	if err := s.Ack(ctx, "j0"); err != nil {
		t.Fatal(err)
	}

	got := take(5*time.Second, 10)
	if ids := jobIDs(got); !slices.Equal(ids, []string{"j1", "j2"}) {
		t.Fatalf("due at +5s: %v, want [j1 j2] in due order", ids)
	}
	if string(got[0].Payload) != "one|with\x00bytes" || !got[0].Due.Equal(base.Add(time.Second)) {
		t.Fatalf("j1 = %+v, want its payload and due", got[0])
	}
	if ids := jobIDs(take(6*time.Second, 10)); len(ids) != 0 {
		t.Fatalf("taken jobs visible again during their lease: %v", ids)
	}
	if n, err := s.Len(ctx); err != nil || n != 3 {
		t.Fatalf("Len = %d, %v; want 3 (leased jobs count)", n, err)
	}
	got = take(5*time.Second+lease, 10)
	if ids := jobIDs(got); !slices.Equal(ids, []string{"j3", "j1", "j2"}) {
		t.Fatalf("after the lease: %v, want [j3 j1 j2]", ids)
	}
	if !got[1].Due.Equal(base.Add(time.Second)) {
		t.Errorf("retaken j1 due %s, want its original due", got[1].Due)
	}
	for _, id := range []string{"j1", "j3", "j1", "unknown"} { // twice and unknown are safe
		if err := s.Ack(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	sched("j2", time.Hour, "two-again") // reschedule replaces due and payload
	if ids := jobIDs(take(time.Hour-time.Second, 10)); len(ids) != 0 {
		t.Fatalf("rescheduled job returned before its new due: %v", ids)
	}
	got = take(2*time.Hour, 10)
	if ids := jobIDs(got); !slices.Equal(ids, []string{"j2"}) || string(got[0].Payload) != "two-again" || !got[0].Due.Equal(base.Add(time.Hour)) {
		t.Fatalf("after reschedule: %+v, want j2 with its new payload and due", got)
	}
	if n, err := s.Len(ctx); err != nil || n != 1 {
		t.Fatalf("Len = %d, %v; want 1", n, err)
	}
}

func testScheduleMax(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	base := time.UnixMilli(1_800_000_000_000)
	const n = 100
	for i := range n {
		if err := s.Schedule(ctx, fmt.Sprintf("job-%03d", i), base, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	used := 0
	for sh := range DefaultShards {
		if h.client.ZCard(ctx, s.shardKeys(sh)[0]).Val() > 0 {
			used++
		}
	}
	if used < DefaultShards/2 {
		t.Fatalf("%d jobs landed in %d of %d shards, want them spread", n, used, DefaultShards)
	}
	seen := map[string]bool{}
	for _, max := range []int{1, 3, 10, 16, 40, 40} {
		jobs, err := s.TakeDue(ctx, base, time.Minute, max)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) > max || len(jobs) == 0 {
			t.Fatalf("TakeDue(max %d) returned %d jobs", max, len(jobs))
		}
		for _, j := range jobs {
			if seen[j.ID] {
				t.Fatalf("job %s returned twice within its lease", j.ID)
			}
			seen[j.ID] = true
		}
	}
	// Drain: every job exactly once, then an empty result.
	for range 100 {
		jobs, err := s.TakeDue(ctx, base, time.Minute, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) == 0 {
			break
		}
		for _, j := range jobs {
			if seen[j.ID] {
				t.Fatalf("job %s returned twice within its lease", j.ID)
			}
			seen[j.ID] = true
		}
	}
	if len(seen) != n {
		t.Fatalf("drained %d distinct jobs, want %d", len(seen), n)
	}
	if jobs, err := s.TakeDue(ctx, base, time.Minute, 50); err != nil || len(jobs) != 0 {
		t.Fatalf("after draining: %d jobs, %v", len(jobs), err)
	}
}

func testBatches(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	// 40 deposits over 4 clicks in one batch: the first of each click is its FTD.
	var ds []Deposit
	for i := range 40 {
		ds = append(ds, Deposit{ClickID: fmt.Sprintf("b%d", i%4), EventID: fmt.Sprintf("e%d", i), Amount: fmt.Sprint(i), Currency: "EUR", OccurredAt: t0})
	}
	for round, wantRepeated := range []bool{false, true} {
		cs, err := s.ClassifyBatch(ctx, ds)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != len(ds) {
			t.Fatalf("%d results for %d deposits", len(cs), len(ds))
		}
		for i, c := range cs {
			want := postback.GoalRD
			if i < 4 {
				want = postback.GoalFTD
			}
			if c.Goal != want || c.Repeated != wantRepeated || c.FTD.EventID != fmt.Sprintf("e%d", i%4) {
				t.Fatalf("round %d deposit %d: %s repeated %v FTD %s; want %s %v e%d", round, i, c.Goal, c.Repeated, c.FTD.EventID, want, wantRepeated, i%4)
			}
		}
	}
	if _, err := s.ClassifyBatch(ctx, []Deposit{{ClickID: "x", EventID: "1"}, {ClickID: "x"}}); !errors.Is(err, ErrEmptyID) {
		t.Fatalf("batch with an empty event id: %v, want ErrEmptyID", err)
	}

	// A qualification parked for b0, released by the batch that marks its FTD.
	if r, err := s.Qualify(ctx, Qualification{ClickID: "b0", EventID: "q", Status: postback.StatusApproved}); err != nil || r.Decision != DecideWait {
		t.Fatalf("park: %+v, %v", r, err)
	}
	var reqs []ClaimRequest
	for i := range 4 {
		reqs = append(reqs, ClaimRequest{ClickID: fmt.Sprintf("b%d", i), PostbackID: fmt.Sprintf("p%d", i), Lease: time.Minute})
	}
	claims, err := s.ClaimBatch(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	var marks []MarkRequest
	for i, c := range claims {
		if c.State != ClaimAcquired || c.Token == "" {
			t.Fatalf("claim %d: %+v, want acquired", i, c)
		}
		marks = append(marks, MarkRequest{ClickID: reqs[i].ClickID, PostbackID: reqs[i].PostbackID, Delivery: Delivery{HTTPStatus: 200 + i}})
	}
	if again, err := s.ClaimBatch(ctx, reqs); err != nil || again[3].State != ClaimHeld {
		t.Fatalf("claim batch again: %+v, %v; want held", again, err)
	}
	// A claim that carries its token is re-entrant: re-run (its answer lost),
	// it gets the lease it took back instead of waiting for it to lapse.
	tok, err := NewClaimToken()
	if err != nil {
		t.Fatal(err)
	}
	own := []ClaimRequest{{ClickID: "b9", PostbackID: "p9", Lease: time.Minute, Token: tok}}
	for round := range 2 {
		if got, err := s.ClaimBatch(ctx, own); err != nil || got[0].State != ClaimAcquired || got[0].Token != tok {
			t.Fatalf("own-token claim, round %d: %+v, %v; want acquired with its token", round, got, err)
		}
	}
	own[0].Token = ""
	if got, err := s.ClaimBatch(ctx, own); err != nil || got[0].State != ClaimHeld {
		t.Fatalf("claim with another token: %+v, %v; want held", got, err)
	}
	marks[0].FTD = &FTDDelivered{EventID: "e0"}
	marks[2].FTD = &FTDDelivered{EventID: "e2"} // FTDs among plain marks: script replies in their places
	parked, err := s.MarkDeliveredBatch(ctx, marks)
	if err != nil {
		t.Fatal(err)
	}
	if parked[0] == nil || parked[0].EventID != "q" || parked[1] != nil || parked[2] != nil || parked[3] != nil {
		t.Fatalf("released %+v, want q for b0 only", parked)
	}
	done, err := s.ClaimBatch(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range done {
		if c.State != ClaimDelivered || c.Delivery.HTTPStatus != 200+i {
			t.Fatalf("claim %d after marks: %+v, want delivered %d", i, c, 200+i)
		}
	}
	marks[1].FTD = &FTDDelivered{EventID: "not-it"}
	if _, err := s.MarkDeliveredBatch(ctx, marks); !errors.Is(err, ErrNotFTD) {
		t.Fatalf("batch with a wrong FTD: %v, want ErrNotFTD", err)
	}
}

// testMixedStreamBatches: the batched qualification, schedule and
// finished-waiting calls decide and store exactly what their single
// counterparts do, each entry on its own, in the order given.
func testMixedStreamBatches(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{Shards: 1})
	const A, R = postback.StatusApproved, postback.StatusRejected
	deliverFTD(t, s, "m-sent", "d1")
	qs := []Qualification{
		{ClickID: "m-wait", EventID: "q1", Status: A, Payload: []byte("p1"), At: t0}, // no FTD yet: parked
		{ClickID: "m-wait", EventID: "q2", Status: A, Payload: []byte("p2"), At: t0}, // same status behind it: repeated
		{ClickID: "m-wait", EventID: "q3", Status: R, Payload: []byte("p3"), At: t0}, // other status: conflict
		{ClickID: "m-sent", EventID: "q4", Status: R, Payload: []byte("p4"), At: t0}, // delivered FTD: send
	}
	want := []struct {
		d        Decision
		repeated bool
		parked   string
	}{{DecideWait, false, "q1"}, {DecideWait, true, "q1"}, {DecideConflict, false, "q1"}, {DecideSend, false, ""}}
	for round := range 2 {
		rs, err := s.QualifyBatch(ctx, qs)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != len(qs) {
			t.Fatalf("%d results for %d qualifications", len(rs), len(qs))
		}
		for i, r := range rs {
			w := want[i]
			if round == 1 && i == 0 {
				w.repeated = true // its own redelivery
			}
			if round == 1 && i == 3 {
				w.repeated = true // the status is recorded now
			}
			if r.Decision != w.d || r.Repeated != w.repeated || r.ParkedEventID != w.parked {
				t.Errorf("round %d qualification %d: %s repeated %v parked %q; want %s %v %q",
					round, i, r.Decision, r.Repeated, r.ParkedEventID, w.d, w.repeated, w.parked)
			}
		}
		if rs[3].FTD.EventID != "d1" || rs[3].FTD.Status != R {
			t.Errorf("round %d: send decided against FTD %+v, want d1 rejected", round, rs[3].FTD)
		}
	}

	base := time.UnixMilli(1_800_000_000_000)
	jobs := []ScheduledJob{{ID: "j2", Due: base.Add(2 * time.Second), Payload: []byte("two")},
		{ID: "j1", Due: base.Add(time.Second), Payload: []byte("one")},
		{ID: "j2", Due: base.Add(3 * time.Second), Payload: []byte("two again")}} // later entry replaces
	if _, err := s.ScheduleBatch(ctx, jobs); err != nil {
		t.Fatal(err)
	}
	due, err := s.TakeDue(ctx, base.Add(time.Hour), time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(jobIDs(due)); got != "[j1 j2]" || string(due[1].Payload) != "two again" || !due[1].Due.Equal(base.Add(3*time.Second)) {
		t.Fatalf("scheduled %s, j2 %q due %s; want [j1 j2], j2 rescheduled", got, due[1].Payload, due[1].Due)
	}

	// Two clicks with waiting events; one batch finishes one event of each.
	for _, c := range []string{"w1", "w2"} {
		for _, e := range []string{"a", "b"} {
			if _, err := s.Attribute(ctx, Touch{ClickID: c, EventID: e, MerchantID: "m", WaitPayload: []byte(e), At: t0}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.FinishWaitingBatch(ctx, []FinishedWaits{{ClickID: "w1", EventIDs: []string{"a"}}, {ClickID: "w2", EventIDs: []string{"b", "never-waited"}}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		click, event string
		want         WaitState
	}{{"w1", "a", WaitFinished}, {"w1", "b", WaitPending}, {"w2", "a", WaitPending}, {"w2", "b", WaitFinished}, {"w2", "never-waited", WaitMissing}} {
		if got, err := s.Waiting(ctx, c.click, c.event); err != nil || got != c.want {
			t.Errorf("%s/%s after the batch: %v, %v; want %v", c.click, c.event, got, err, c.want)
		}
	}
}

// testClassifyClaim: one script classifies like Classify and claims the
// postback of the goal it decided like Claim, re-entrant with the caller's
// token; an FTD whose record keeps another partner is classified and left
// unclaimed.
func testClassifyClaim(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	tok := func() string {
		t.Helper()
		tk, err := NewClaimToken()
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	req := func(click, event, partner, token string) ClassifyClaim {
		return ClassifyClaim{
			Deposit:       Deposit{ClickID: click, EventID: event, Amount: "10", Currency: "EUR", OccurredAt: t0, Route: Route{Partner: partner, Via: RouteClick}},
			FTDPostbackID: "ftd-" + partner + "-" + event, RDPostbackID: "rd-" + partner + "-" + event,
			Lease: time.Minute, Token: token,
		}
	}
	run := func(step string, reqs ...ClassifyClaim) []ClassifiedClaim {
		t.Helper()
		out, err := s.ClassifyClaimBatch(ctx, reqs)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if len(out) != len(reqs) {
			t.Fatalf("%s: %d answers for %d deposits", step, len(out), len(reqs))
		}
		return out
	}
	check := func(step string, c ClassifiedClaim, goal postback.Goal, repeated bool, state ClaimState) {
		t.Helper()
		if c.Goal != goal || c.Repeated != repeated || c.Claim == nil || c.Claim.State != state {
			t.Errorf("%s: %s repeated %v claim %+v; want %s %v %s", step, c.Goal, c.Repeated, c.Claim, goal, repeated, state)
		}
	}
	t1, t2 := tok(), tok()
	first := run("first", req("cc", "d1", "net", t1), req("cc", "d2", "net", t2), req("other", "d9", "net", t1))
	check("FTD", first[0], postback.GoalFTD, false, ClaimAcquired)
	check("rdep in the same batch", first[1], postback.GoalRD, false, ClaimAcquired)
	check("another click's FTD", first[2], postback.GoalFTD, false, ClaimAcquired)
	if first[0].Claim.Token != t1 || first[0].FTD.EventID != "d1" || first[0].FTD.Route.Partner != "net" {
		t.Errorf("FTD: token %q record %+v; want the caller's token and d1's record routed to net", first[0].Claim.Token, first[0].FTD)
	}
	// The claims are those of the goal's postback ids.
	if r, err := s.Claim(ctx, "cc", "ftd-net-d1", time.Minute); err != nil || r.State != ClaimHeld {
		t.Errorf("Claim of the FTD's postback after it: %+v, %v; want held", r, err)
	}
	if r, err := s.Claim(ctx, "cc", "ftd-net-d2", time.Minute); err != nil || r.State != ClaimAcquired {
		t.Errorf("Claim of the postback d2 would make as an FTD: %+v, %v; want acquired (not claimed by the rdep)", r, err)
	}

	again := run("repeat with the same tokens", req("cc", "d1", "net", t1), req("cc", "d2", "net", t2))
	check("FTD again, same token", again[0], postback.GoalFTD, true, ClaimAcquired)
	check("rdep again, same token", again[1], postback.GoalRD, true, ClaimAcquired)
	held := run("repeat with another token", req("cc", "d1", "net", tok()))
	check("FTD again, other token", held[0], postback.GoalFTD, true, ClaimHeld)

	if _, err := s.MarkDelivered(ctx, "cc", "ftd-net-d1", Delivery{HTTPStatus: 200}, &FTDDelivered{EventID: "d1"}); err != nil {
		t.Fatal(err)
	}
	done := run("after the delivery", req("cc", "d1", "net", tok()))
	check("FTD after its delivery", done[0], postback.GoalFTD, true, ClaimDelivered)
	if done[0].Claim.Delivery.HTTPStatus != 200 || !done[0].FTD.Delivered {
		t.Errorf("after the delivery: %+v, FTD %+v; want the recorded delivery and a delivered FTD", done[0].Claim, done[0].FTD)
	}

	// The FTD classified with net, seen again routed to another partner
	// (its route memo lost): classified, and nothing claimed.
	rerouted := run("rerouted", req("cc", "d1", "elsewhere", tok()))
	if c := rerouted[0]; c.Goal != postback.GoalFTD || !c.Repeated || c.Claim != nil || c.FTD.Route.Partner != "net" {
		t.Errorf("rerouted FTD: %s repeated %v claim %+v route %+v; want ftd, repeated, no claim, route net", c.Goal, c.Repeated, c.Claim, c.FTD.Route)
	}
	if r, err := s.Claim(ctx, "cc", "ftd-elsewhere-d1", time.Minute); err != nil || r.State != ClaimAcquired {
		t.Errorf("Claim of the rerouted FTD's would-be postback: %+v, %v; want acquired (untouched)", r, err)
	}
	// An rdep routed elsewhere is not an FTD: it is claimed.
	check("rdep routed elsewhere", run("rdep elsewhere", req("cc", "d3", "elsewhere", tok()))[0], postback.GoalRD, false, ClaimAcquired)
}

// testScriptFlush: after the server lost its script cache, single calls and
// pipelined batches fall back to EVAL.
func testScriptFlush(t *testing.T, h *harness) {
	ctx := context.Background()
	s := h.store(Options{})
	if _, err := s.Classify(ctx, Deposit{ClickID: "f", EventID: "e0", Amount: "1", Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	flush := func() {
		t.Helper()
		var err error
		if cc, ok := h.client.(*redis.ClusterClient); ok {
			err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.ScriptFlush(ctx).Err() })
		} else {
			err = h.client.ScriptFlush(ctx).Err()
		}
		if err != nil {
			t.Fatalf("script flush: %v", err)
		}
	}
	flush()
	if _, err := s.Classify(ctx, Deposit{ClickID: "f", EventID: "e1", Amount: "1", Currency: "EUR"}); err != nil {
		t.Fatalf("classify after flush: %v", err)
	}
	flush()
	cs, err := s.ClassifyBatch(ctx, []Deposit{{ClickID: "f", EventID: "e2"}, {ClickID: "g", EventID: "e2"}})
	if err != nil {
		t.Fatalf("classify batch after flush: %v", err)
	}
	if cs[0].Goal != postback.GoalRD || cs[1].Goal != postback.GoalFTD {
		t.Fatalf("after flush: %+v", cs)
	}
	flush()
	if err := s.Schedule(ctx, "j", t0, nil); err != nil {
		t.Fatal(err)
	}
	flush()
	if jobs, err := s.TakeDue(ctx, t0, time.Minute, 100); err != nil || len(jobs) != 1 {
		t.Fatalf("take due after flush: %v, %v", jobs, err)
	}
	// A batch of marks, plain commands and the FTD's script together: only
	// the script is run again, and each answer stays in its place.
	flush()
	marks := []MarkRequest{
		{ClickID: "f", PostbackID: "rd-e1", Delivery: Delivery{HTTPStatus: 201}},
		{ClickID: "g", PostbackID: "ftd-e2", Delivery: Delivery{HTTPStatus: 202}, FTD: &FTDDelivered{EventID: "e2"}},
		{ClickID: "f", PostbackID: "ftd-e9", Delivery: Delivery{HTTPStatus: 203}, FTD: &FTDDelivered{EventID: "e9"}},
	}
	if _, err := s.MarkDeliveredBatch(ctx, marks); !errors.Is(err, ErrNotFTD) || !strings.Contains(err.Error(), "mark 2 (postback ftd-e9)") {
		t.Fatalf("mark batch after flush: %v; want ErrNotFTD naming mark 2", err)
	}
	if _, err := s.MarkDeliveredBatch(ctx, marks[:2]); err != nil {
		t.Fatalf("mark batch after flush: %v", err)
	}
	for i, m := range marks {
		if r, err := s.Claim(ctx, m.ClickID, m.PostbackID, time.Minute); err != nil || r.State != ClaimDelivered || r.Delivery.HTTPStatus != 201+i {
			t.Fatalf("claim of %s after the marks: %+v, %v; want delivered %d", m.PostbackID, r, err, 201+i)
		}
	}
}
