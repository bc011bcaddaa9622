package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/record"
)

// The merchants of the configuration template that only these scenarios use.
const (
	merchantInstant  = "instant"  // CPA, default partner scaleo, attribution_wait 0s
	merchantUnrouted = "unrouted" // CPA, no default partner, attribution_wait 0s
)

// attrTimeout bounds each wait of the attribution scenarios; none is waited
// out when the service works (the default attribution_wait, 1m, is longer:
// a scenario that only passed after a waiting event's deadline would fail).
const attrTimeout = 30 * time.Second

// attrSuite is the world the attribution scenarios share: one env, one
// member, the output reader and a Redis client to look at (and, for the
// status-change scenarios, tamper with) the click state.
type attrSuite struct {
	e    *testEnv
	outs *outputs
	m    *member
	rdb  *redis.Client

	mu sync.Mutex
	n  int
	at time.Time
	// wantRequests: click → postbacks its partners must have accepted.
	wantRequests map[string]int
	// wantDLQ: event id → the reason of its one dead letter.
	wantDLQ map[string]string
}

// TestAttributionScenarios drives the README's attribution rules end to end
// through the real binary: which partner each postback goes to, with which
// params, and how its audit record says it was routed.
func TestAttributionScenarios(t *testing.T) {
	e := newEnv(t, envOptions{createTopics: true})
	s := &attrSuite{
		e: e, outs: e.startOutputs(), at: time.Now().UTC().Truncate(time.Second),
		wantRequests: map[string]int{}, wantDLQ: map[string]string{},
	}
	s.rdb = redis.NewClient(&redis.Options{Addr: e.redis})
	t.Cleanup(func() { _ = s.rdb.Close() })
	s.m = e.startMember("a")
	s.m.waitReady(readyTimeout)

	t.Run("params on the first deposit", s.paramsOnFirstDeposit)
	t.Run("event names another network", s.otherNetworkOnce)
	t.Run("deposit waits for its registration", s.waitsForRegistration)
	t.Run("deposit waits for a registration without network", s.waitsForRegistrationDefault)
	t.Run("waiting off routes by default at once", s.waitingOff)
	t.Run("status change after the click context expired", s.statusAfterExpiry)
	t.Run("status change after the click context changed", s.statusAfterChange)
	t.Run("no route", s.noRoute)

	out := e.finish(s.outs, s.m)
	s.checkTrail(t, out)
	e.checkNoSecretInLogs(s.m)
}

// sub is the suite's env bound to a subtest, so that its helpers fail the
// subtest (from the subtest's goroutine) rather than the parent.
func (s *attrSuite) sub(t *testing.T) *testEnv {
	c := *s.e
	c.t = t
	return &c
}

// id returns a unique id with a readable prefix.
func (s *attrSuite) id(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return fmt.Sprintf("%s-%s-%03d", prefix, randomID(), s.n)
}

// send produces one input event: the envelope plus fields.
func (s *attrSuite) send(t *testing.T, role, click, merchant, id string, fields map[string]any) {
	t.Helper()
	s.mu.Lock()
	s.at = s.at.Add(time.Second)
	at := s.at
	s.mu.Unlock()
	v := map[string]any{"event_id": id, "occurred_at": at.Format(time.RFC3339), "merchant_id": merchant, "click_id": click}
	maps.Copy(v, fields)
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	s.sub(t).produce([]inMsg{{role: role, key: click, value: b}})
}

func deposit(amount, currency string, extra map[string]any) map[string]any {
	f := map[string]any{"amount": amount, "currency": currency, "status": "succeeded", "player_id": "p-attr"}
	maps.Copy(f, extra)
	return f
}

func registration(extra map[string]any) map[string]any {
	f := map[string]any{"kind": "registration", "player_id": "p-attr"}
	maps.Copy(f, extra)
	return f
}

// trString is a datingnet tracker string and the fields the partner's
// pattern (trID_{id}_{affid}-{transid}-{clickid}-{extra}_trID) decodes.
type trString struct {
	raw                     string
	affid, transid, clickid string
}

func newTrString(n int) trString {
	tr := trString{affid: fmt.Sprintf("aff%d", n), transid: fmt.Sprintf("tx%d", 7000+n), clickid: fmt.Sprintf("ck%d", 900+n)}
	tr.raw = fmt.Sprintf("trID_%d_%s-%s-%s-x%d_trID", 1000000+n, tr.affid, tr.transid, tr.clickid, n)
	return tr
}

// auditsOf returns the audit records of an event read so far.
func (s *attrSuite) auditsOf(eventID string) []record.Audit {
	var out []record.Audit
	for _, a := range s.outs.snapshot().audits {
		if a.rec.EventID == eventID {
			out = append(out, a.rec)
		}
	}
	return out
}

// requests returns the postbacks the tracker accepted whose query field
// has value, in order of acceptance.
func (s *attrSuite) requests(field, value string) []accepted {
	var out []accepted
	for _, reqs := range s.e.tracker.snapshot() {
		for _, r := range reqs {
			if r.query.Get(field) == value {
				out = append(out, r)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// final waits for the event's audit record with a final outcome and
// requires it to be the event's only audit record.
func (s *attrSuite) final(t *testing.T, eventID string) record.Audit {
	t.Helper()
	var got []record.Audit
	var fin *record.Audit
	ok := waitFor(attrTimeout, func() bool {
		if s.m.exited() {
			return true
		}
		got = s.auditsOf(eventID)
		for i := range got {
			if finalOutcome(got[i].Outcome) {
				fin = &got[i]
				return true
			}
		}
		return false
	})
	if s.m.exited() {
		t.Fatalf("the member exited (code %d)\n%s", s.m.code, tail(s.m.stderr, 40))
	}
	if !ok || fin == nil {
		t.Fatalf("event %s: no audit record with a final outcome within %s (records so far: %+v)", eventID, attrTimeout, got)
	}
	if len(got) != 1 {
		t.Errorf("event %s has %d audit records, want exactly 1: %+v", eventID, len(got), got)
	}
	return *fin
}

// delivered waits for the event's single postback: one delivered audit
// record and one request the tracker accepted, carrying the audit's
// postback id as its transaction id. The click's expected request count
// grows by one.
func (s *attrSuite) delivered(t *testing.T, eventID string) (record.Audit, accepted) {
	t.Helper()
	a := s.final(t, eventID)
	if a.Outcome != record.OutcomeDelivered {
		t.Fatalf("event %s audited %s (reason %q, error %q), want delivered: %+v", eventID, a.Outcome, a.Reason, a.Error, a)
	}
	s.mu.Lock()
	s.wantRequests[a.ClickID]++
	s.mu.Unlock()
	reqs := s.requests("event_id", eventID)
	if len(reqs) != 1 {
		t.Fatalf("event %s: the tracker accepted %d postbacks, want 1", eventID, len(reqs))
	}
	if tx := reqs[0].txOf(); tx != a.PostbackID || tx == "" {
		t.Errorf("event %s: the tracker received transaction id %q, the audit says postback %q", eventID, tx, a.PostbackID)
	}
	return a, reqs[0]
}

// wantAudit is what an audit record must say about a postback's route.
type wantAudit struct {
	click, goal, status, network, route, clickNetwork string
}

func checkAudit(t *testing.T, a record.Audit, w wantAudit) {
	t.Helper()
	got := wantAudit{a.ClickID, a.Goal, a.Status, a.Network, a.Route, a.ClickNetwork}
	if got != w {
		t.Errorf("event %s audited as\n  click %q goal %q status %q network %q route %q click_network %q\nwant\n  click %q goal %q status %q network %q route %q click_network %q",
			a.EventID, got.click, got.goal, got.status, got.network, got.route, got.clickNetwork,
			w.click, w.goal, w.status, w.network, w.route, w.clickNetwork)
	}
}

// checkRequest compares an accepted request's path and query fields ("" =
// must be empty or absent) and requires the partner's token.
func (s *attrSuite) checkRequest(t *testing.T, r accepted, partner, path string, want map[string]string) {
	t.Helper()
	if r.path != path {
		t.Errorf("postback of event %s sent to %s, want %s (partner %s)", r.query.Get("event_id"), r.path, path, partner)
	}
	tokenField, tokenEnv := "token", scaleoTokenEnv
	if partner == partnerDating {
		tokenField, tokenEnv = "key", datingTokenEnv
	}
	if r.query.Get(tokenField) != s.e.tokens[tokenEnv] {
		t.Errorf("postback of event %s does not carry %s's token", r.query.Get("event_id"), partner)
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if got := r.query.Get(k); got != want[k] {
			t.Errorf("postback of event %s (%s%s): %s = %q, want %q", r.query.Get("event_id"), partner, r.path, k, got, want[k])
		}
	}
}

// datingFields are the query fields a datingnet postback of a click with
// tracker string tr and offer must carry.
func datingFields(click, alias string, tr trString, offer string) map[string]string {
	return map[string]string{"click_id": click, "goal": alias, "affid": tr.affid, "transid": tr.transid, "clickid": tr.clickid, "offer": offer}
}

// requireClickRequests checks how many postbacks each partner accepted for
// the click so far.
func (s *attrSuite) requireClickRequests(t *testing.T, click string, want map[string]int) {
	t.Helper()
	got := map[string]int{}
	for _, r := range s.requests("click_id", click) {
		switch {
		case r.path == "/postback":
			got[partnerDating]++
		case strings.HasPrefix(r.path, "/track/"):
			got[partnerScaleo]++
		default:
			got[r.path]++
		}
	}
	for p := range want {
		if want[p] == 0 {
			delete(want, p)
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("click %s: postbacks accepted per partner %v, want %v", click, got, want)
	}
}

func (s *attrSuite) clickKey(click, kind string) string {
	return s.e.prefix + ":{c:" + click + "}:" + kind
}

// clickContext reads the click's context from Redis (found false: none).
func (s *attrSuite) clickContext(t *testing.T, click string) (ctx struct {
	MerchantID string            `json:"merchant_id"`
	Network    string            `json:"network"`
	Params     map[string]string `json:"params"`
}, found bool) {
	t.Helper()
	raw, err := s.rdb.Get(context.Background(), s.clickKey(click, "ctx")).Result()
	if err == redis.Nil {
		return ctx, false
	}
	if err != nil {
		t.Fatalf("read the context of click %s: %v", click, err)
	}
	if err := json.Unmarshal([]byte(raw), &ctx); err != nil {
		t.Fatalf("context of click %s does not decode: %v: %s", click, err, raw)
	}
	return ctx, true
}

// waitState reads the click's waiting entry of eventID: "" when there is
// none, "-" when finished, otherwise the stored payload.
func (s *attrSuite) waitState(t *testing.T, click, eventID string) string {
	t.Helper()
	v, err := s.rdb.HGet(context.Background(), s.clickKey(click, "await"), eventID).Result()
	if err == redis.Nil {
		return ""
	}
	if err != nil {
		t.Fatalf("read the waiting entry of %s/%s: %v", click, eventID, err)
	}
	return v
}

// waitParked waits until the deposit is parked in Redis, its offset is
// committed and the output reader has read everything written so far; then
// it requires that nothing was audited or sent for it.
func (s *attrSuite) waitParked(t *testing.T, click, eventID string) {
	t.Helper()
	var state string
	if !waitFor(attrTimeout, func() bool {
		state = s.waitState(t, click, eventID)
		return state != "" && state != "-"
	}) {
		t.Fatalf("deposit %s of click %s never parked in %s (field state %q; audits %+v)",
			eventID, click, s.clickKey(click, "await"), state, s.auditsOf(eventID))
	}
	var w struct {
		Value     []byte    `json:"value"`
		WaitUntil time.Time `json:"wait_until"`
	}
	if err := json.Unmarshal([]byte(state), &w); err != nil || !strings.Contains(string(w.Value), eventID) {
		t.Errorf("the waiting entry of %s does not hold its message (err %v): %s", eventID, err, state)
	}
	if d := time.Until(w.WaitUntil); d < 20*time.Second {
		t.Errorf("deposit %s waits until %s, only %s from now: want the merchant's 1m attribution_wait", eventID, w.WaitUntil, d.Round(time.Second))
	}
	// A waiting event does not hold its partition: its offset commits.
	e := s.sub(t)
	e.waitCommitted(attrTimeout, roleDeposits)
	e.waitCaughtUp(s.outs, caughtUpTimeout)
	if got := s.auditsOf(eventID); len(got) != 0 {
		t.Fatalf("deposit %s is parked but already audited: %+v", eventID, got)
	}
	if got := s.requests("click_id", click); len(got) != 0 {
		t.Fatalf("click %s: the tracker accepted %d postbacks while its deposit waits", click, len(got))
	}
}

// metric sums the samples of name whose labels contain label.
func (s *attrSuite) metric(t *testing.T, name, label string) float64 {
	t.Helper()
	code, body, err := s.m.get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, label) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// Scenario 1: the click's only params come on its first deposit, which
// names the network. A later deposit without network or params still goes
// to datingnet with the decoded tracker-string fields and the offer.
func (s *attrSuite) paramsOnFirstDeposit(t *testing.T) {
	click, tr, offer := s.id("first"), newTrString(1), "offer-first"
	ftd := s.id("dep")
	s.send(t, roleDeposits, click, merchantDating, ftd, deposit("29.99", "USD", map[string]any{
		"network": partnerDating, "params": map[string]string{"tr": tr.raw, "offer_id": offer},
	}))
	a, r := s.delivered(t, ftd)
	checkAudit(t, a, wantAudit{click, "ftd", "pending", partnerDating, "event", ""})
	want := datingFields(click, "signup", tr, offer)
	want["amount"], want["currency"] = "29.99", "USD"
	s.checkRequest(t, r, partnerDating, "/postback", want)

	later := s.id("dep")
	s.send(t, roleDeposits, click, merchantDating, later, deposit("15.50", "USD", nil))
	a, r = s.delivered(t, later)
	checkAudit(t, a, wantAudit{click, "rdep", "", partnerDating, "click", ""})
	want = datingFields(click, "rebill", tr, offer)
	want["amount"], want["currency"] = "15.50", "USD"
	s.checkRequest(t, r, partnerDating, "/postback", want)
	s.requireClickRequests(t, click, map[string]int{partnerDating: 2})
}

// Scenario 2: the click is datingnet's (its registration says so, with the
// tracker string); a deposit naming scaleo goes to scaleo, that once, with
// its own params only, and contributes nothing to the click; the next
// deposit without network goes to datingnet with the tracker fields.
func (s *attrSuite) otherNetworkOnce(t *testing.T) {
	click, tr := s.id("other"), newTrString(2)
	reg := s.id("reg")
	// No offer_id on the click: the scaleo event's offer_id must not become
	// the click's. custom2 on the click: it must not reach scaleo.
	s.send(t, roleRegistrations, click, merchantDating, reg, registration(map[string]any{
		"network": partnerDating, "params": map[string]string{"tr": tr.raw, "custom2": "dating-c2"},
	}))
	a, r := s.delivered(t, reg)
	checkAudit(t, a, wantAudit{click, "reg", "", partnerDating, "event", ""})
	s.checkRequest(t, r, partnerDating, "/postback", datingFields(click, "free_reg", tr, ""))

	toScaleo := s.id("dep")
	s.send(t, roleDeposits, click, merchantDating, toScaleo, deposit("80.00", "EUR", map[string]any{
		"network": partnerScaleo, "params": map[string]string{"offer_id": "scaleo-offer", "custom3": "scaleo-c3"},
	}))
	a, r = s.delivered(t, toScaleo)
	checkAudit(t, a, wantAudit{click, "ftd", "pending", partnerScaleo, "event", partnerDating})
	s.checkRequest(t, r, partnerScaleo, "/track/conv", map[string]string{
		"click_id": click, "g": "ftd", "status": "pending", "amount": "80.00", "currency": "EUR",
		"custom2": "", // the click's params belong to datingnet
	})
	if ctx, ok := s.clickContext(t, click); !ok || ctx.Network != partnerDating ||
		!maps.Equal(ctx.Params, map[string]string{"tr": tr.raw, "custom2": "dating-c2"}) {
		t.Errorf("click %s context after the scaleo event: found %v network %q params %v; want datingnet with the registration's params only",
			click, ok, ctx.Network, ctx.Params)
	}

	back := s.id("dep")
	s.send(t, roleDeposits, click, merchantDating, back, deposit("20.00", "EUR", nil))
	a, r = s.delivered(t, back)
	checkAudit(t, a, wantAudit{click, "rdep", "", partnerDating, "click", ""})
	want := datingFields(click, "rebill", tr, "") // not scaleo's offer
	want["amount"], want["currency"] = "20.00", "EUR"
	s.checkRequest(t, r, partnerDating, "/postback", want)
	s.requireClickRequests(t, click, map[string]int{partnerDating: 2, partnerScaleo: 1})
}

// Scenario 3a: a deposit consumed before its registration waits in Redis
// (merchant dating: attribution_wait 1m), committed and unaudited; the
// registration naming datingnet with the tracker string releases it at once
// and the FTD reaches datingnet with the tracker fields (route click).
func (s *attrSuite) waitsForRegistration(t *testing.T) {
	click, tr, offer := s.id("wait"), newTrString(3), "offer-wait"
	ftd := s.id("dep")
	released := s.metric(t, "postbackd_attribution_waits_total", `stage="released"`)
	s.send(t, roleDeposits, click, merchantDating, ftd, deposit("40.00", "EUR", nil))
	s.waitParked(t, click, ftd)

	reg := s.id("reg")
	s.send(t, roleRegistrations, click, merchantDating, reg, registration(map[string]any{
		"network": partnerDating, "params": map[string]string{"tr": tr.raw, "offer_id": offer},
	}))
	a, r := s.delivered(t, reg)
	checkAudit(t, a, wantAudit{click, "reg", "", partnerDating, "event", ""})
	s.checkRequest(t, r, partnerDating, "/postback", datingFields(click, "free_reg", tr, offer))

	a, r = s.delivered(t, ftd)
	checkAudit(t, a, wantAudit{click, "ftd", "pending", partnerDating, "click", ""})
	if a.Source.Topic != s.e.topics[roleDeposits] {
		t.Errorf("released deposit %s audited with source topic %q, want its own %q", ftd, a.Source.Topic, s.e.topics[roleDeposits])
	}
	want := datingFields(click, "signup", tr, offer)
	want["amount"], want["currency"] = "40.00", "EUR"
	s.checkRequest(t, r, partnerDating, "/postback", want)
	if !waitFor(attrTimeout, func() bool { return s.waitState(t, click, ftd) == "-" }) {
		t.Errorf("released deposit %s not marked finished in %s: %q", ftd, s.clickKey(click, "await"), s.waitState(t, click, ftd))
	}
	if got := s.metric(t, "postbackd_attribution_waits_total", `stage="released"`); got != released+1 {
		t.Errorf("postbackd_attribution_waits_total{stage=\"released\"} went from %v to %v, want +1", released, got)
	}
	s.requireClickRequests(t, click, map[string]int{partnerDating: 2})
}

// Scenario 3a': the registration that releases the waiting deposit names no
// network, only the tracker string: the deposit is released all the same
// and goes to the merchant's default partner (route default) with the
// registration's params.
func (s *attrSuite) waitsForRegistrationDefault(t *testing.T) {
	click, tr, offer := s.id("waitdef"), newTrString(4), "offer-waitdef"
	ftd := s.id("dep")
	s.send(t, roleDeposits, click, merchantDating, ftd, deposit("45.00", "USD", nil))
	s.waitParked(t, click, ftd)

	reg := s.id("reg")
	s.send(t, roleRegistrations, click, merchantDating, reg, registration(map[string]any{
		"params": map[string]string{"tr": tr.raw, "offer_id": offer},
	}))
	a, r := s.delivered(t, reg)
	checkAudit(t, a, wantAudit{click, "reg", "", partnerDating, "default", ""})
	s.checkRequest(t, r, partnerDating, "/postback", datingFields(click, "free_reg", tr, offer))

	a, r = s.delivered(t, ftd)
	checkAudit(t, a, wantAudit{click, "ftd", "pending", partnerDating, "default", ""})
	want := datingFields(click, "signup", tr, offer)
	want["amount"], want["currency"] = "45.00", "USD"
	s.checkRequest(t, r, partnerDating, "/postback", want)
	s.requireClickRequests(t, click, map[string]int{partnerDating: 2})
}

// Scenario 3b: waiting off (merchant instant, default scaleo): a deposit
// without network and without registration goes to scaleo at once (route
// default, nothing parked); the registration naming datingnet that follows
// makes the click datingnet's, and later deposits go there.
func (s *attrSuite) waitingOff(t *testing.T) {
	click, tr, offer := s.id("nowait"), newTrString(5), "offer-nowait"
	ftd := s.id("dep")
	s.send(t, roleDeposits, click, merchantInstant, ftd, deposit("60.00", "EUR", nil))
	a, r := s.delivered(t, ftd)
	checkAudit(t, a, wantAudit{click, "ftd", "pending", partnerScaleo, "default", ""})
	s.checkRequest(t, r, partnerScaleo, "/track/conv", map[string]string{
		"click_id": click, "g": "ftd", "status": "pending", "amount": "60.00", "currency": "EUR", "custom2": "",
	})
	if st := s.waitState(t, click, ftd); st != "" {
		t.Errorf("deposit %s of a merchant with attribution_wait 0s has a waiting entry: %q", ftd, st)
	}

	reg := s.id("reg")
	s.send(t, roleRegistrations, click, merchantInstant, reg, registration(map[string]any{
		"network": partnerDating, "params": map[string]string{"tr": tr.raw, "offer_id": offer},
	}))
	a, r = s.delivered(t, reg)
	checkAudit(t, a, wantAudit{click, "reg", "", partnerDating, "event", ""})
	s.checkRequest(t, r, partnerDating, "/postback", datingFields(click, "free_reg", tr, offer))

	later := s.id("dep")
	s.send(t, roleDeposits, click, merchantInstant, later, deposit("12.34", "EUR", nil))
	a, r = s.delivered(t, later)
	checkAudit(t, a, wantAudit{click, "rdep", "", partnerDating, "click", ""})
	want := datingFields(click, "rebill", tr, offer)
	want["amount"], want["currency"] = "12.34", "EUR"
	s.checkRequest(t, r, partnerDating, "/postback", want)
	s.requireClickRequests(t, click, map[string]int{partnerScaleo: 1, partnerDating: 2})
}

// statusScenario registers the click with scaleo (custom2 camp-x), sends its
// FTD there, lets tamper change the click's Redis context, then qualifies
// it: the status change must follow the FTD's route (scaleo, route
// conversion) whatever the context says now.
func (s *attrSuite) statusScenario(t *testing.T, merchant string, tamper func(click string)) {
	t.Helper()
	click := s.id("status-" + merchant)
	reg := s.id("reg")
	s.send(t, roleRegistrations, click, merchant, reg, registration(map[string]any{
		"network": partnerScaleo, "params": map[string]string{"custom2": "camp-x"},
	}))
	a, r := s.delivered(t, reg)
	checkAudit(t, a, wantAudit{click, "reg", "", partnerScaleo, "event", ""})
	s.checkRequest(t, r, partnerScaleo, "/track/conv", map[string]string{"click_id": click, "g": "reg"})

	ftd := s.id("dep")
	s.send(t, roleDeposits, click, merchant, ftd, deposit("50.00", "EUR", nil))
	a, r = s.delivered(t, ftd)
	checkAudit(t, a, wantAudit{click, "ftd", "pending", partnerScaleo, "click", ""})
	s.checkRequest(t, r, partnerScaleo, "/track/conv", map[string]string{
		"click_id": click, "g": "ftd", "status": "pending", "amount": "50.00", "currency": "EUR", "custom2": "camp-x",
	})

	tamper(click)

	qual := s.id("qual")
	s.send(t, roleQualifications, click, merchant, qual, map[string]any{"status": "approved"})
	a, r = s.delivered(t, qual)
	checkAudit(t, a, wantAudit{click, "ftd_status", "approved", partnerScaleo, "conversion", ""})
	if !decimalEqual(a.Amount, "50.00") || a.Currency != "EUR" {
		t.Errorf("status change of click %s audited with %s %s, want the FTD's 50.00 EUR", click, a.Amount, a.Currency)
	}
	s.checkRequest(t, r, partnerScaleo, "/track/conv-change", map[string]string{
		"click_id": click, "g": "ftd_status", "status": "approved", "amount": "50.00", "currency": "EUR",
	})

	var conf []record.Confirmation
	if !waitFor(attrTimeout, func() bool {
		conf = nil
		for _, c := range s.outs.snapshot().confirms {
			if c.ClickID == click {
				conf = append(conf, c)
			}
		}
		return len(conf) > 0
	}) {
		t.Fatalf("no confirmation for click %s within %s", click, attrTimeout)
	}
	c := conf[0]
	if len(conf) != 1 || c.Network != partnerScaleo || c.Status != "approved" || c.FTDEventID != ftd ||
		c.QualificationEventID != qual || !decimalEqual(c.Amount, "50.00") || c.Currency != "EUR" || c.PostbackID != a.PostbackID || c.MerchantID != merchant {
		t.Errorf("confirmations of click %s: %+v; want one: network scaleo, approved, ftd %s, qualification %s, 50.00 EUR, postback %s, merchant %s",
			click, conf, ftd, qual, a.PostbackID, merchant)
	}
	s.requireClickRequests(t, click, map[string]int{partnerScaleo: 3})
}

// Scenario 4, expired: the click's context is gone when the qualification
// comes. Merchant dating: without the FTD's own route, the status change
// would go to its default partner datingnet (which takes no ftd_status).
func (s *attrSuite) statusAfterExpiry(t *testing.T) {
	s.statusScenario(t, merchantDating, func(click string) {
		n, err := s.rdb.Del(context.Background(), s.clickKey(click, "ctx")).Result()
		if err != nil || n != 1 {
			t.Fatalf("delete the context of click %s (%s): deleted %d, %v", click, s.clickKey(click, "ctx"), n, err)
		}
	})
}

// Scenario 4, changed: the click's context now says datingnet, with other
// params. Merchant casino (default scaleo): the click's route would be
// datingnet.
func (s *attrSuite) statusAfterChange(t *testing.T) {
	s.statusScenario(t, merchantCasino, func(click string) {
		ctx, ok := s.clickContext(t, click)
		if !ok || ctx.Network != partnerScaleo || ctx.Params["custom2"] != "camp-x" {
			t.Fatalf("context of click %s before the change: found %v %+v, want scaleo with custom2 camp-x", click, ok, ctx)
		}
		changed := `{"merchant_id":"casino","network":"datingnet","params":{"custom2":"other"}}`
		if err := s.rdb.Set(context.Background(), s.clickKey(click, "ctx"), changed, time.Hour).Err(); err != nil {
			t.Fatalf("overwrite the context of click %s: %v", click, err)
		}
	})
}

// Scenario 5: no default partner, waiting off (merchant unrouted): a
// deposit without network whose click has no context is dead-lettered
// (no_route), audited as such, and nothing is sent.
func (s *attrSuite) noRoute(t *testing.T) {
	click := s.id("noroute")
	dep := s.id("dep")
	s.mu.Lock()
	s.wantDLQ[dep] = "no_route"
	s.mu.Unlock()
	s.send(t, roleDeposits, click, merchantUnrouted, dep, deposit("70.00", "EUR", nil))
	a := s.final(t, dep)
	if a.Outcome != record.OutcomeDeadLettered || a.Reason != "no_route" || a.ClickID != click || a.Network != "" || a.PostbackID != "" {
		t.Errorf("deposit %s audited %s reason %q click %q network %q postback %q; want dead_lettered no_route for click %s, no network, no postback",
			dep, a.Outcome, a.Reason, a.ClickID, a.Network, a.PostbackID, click)
	}
	var dl []record.DeadLetter
	if !waitFor(attrTimeout, func() bool {
		dl = nil
		for _, d := range s.outs.snapshot().dlq {
			if d.EventID == dep {
				dl = append(dl, d)
			}
		}
		return len(dl) > 0
	}) {
		t.Fatalf("no dead letter for deposit %s within %s", dep, attrTimeout)
	}
	d := dl[0]
	if len(dl) != 1 || d.Reason != "no_route" || d.ClickID != click || d.EventKind != "deposit" || !strings.Contains(d.Value, dep) ||
		d.Source.Topic != s.e.topics[roleDeposits] {
		t.Errorf("dead letters of deposit %s: %+v; want one, no_route, click %s, kind deposit, with the source message", dep, dl, click)
	}
	if st := s.waitState(t, click, dep); st != "" {
		t.Errorf("deposit %s of a merchant with attribution_wait 0s has a waiting entry: %q", dep, st)
	}
	s.requireClickRequests(t, click, nil)
}

// checkTrail checks the whole output once the member stopped: every record
// parses, no audit record carries a token, the dead letters are exactly the
// expected ones, and each click's partners accepted exactly the postbacks
// its scenario checked, none twice.
func (s *attrSuite) checkTrail(t *testing.T, out outputSnapshot) {
	t.Helper()
	if len(out.bad) > 0 {
		t.Errorf("output records that do not parse: %v", out.bad)
	}
	for _, a := range out.audits {
		for name, tok := range s.e.tokens {
			if strings.Contains(string(a.raw), tok) {
				t.Errorf("audit record of event %s carries the secret of %s", a.rec.EventID, name)
			}
		}
		if a.key != a.rec.ClickID {
			t.Errorf("audit record of event %s keyed %q, want its click %q", a.rec.EventID, a.key, a.rec.ClickID)
		}
	}
	got := map[string]string{}
	for _, d := range out.dlq {
		if _, dup := got[d.EventID]; dup {
			t.Errorf("event %s dead-lettered twice", d.EventID)
		}
		got[d.EventID] = d.Reason
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !maps.Equal(got, s.wantDLQ) {
		t.Errorf("dead letters (event → reason) %v, want %v", got, s.wantDLQ)
	}
	perClick := map[string]int{}
	for key, reqs := range s.e.tracker.snapshot() {
		if len(reqs) != 1 {
			t.Errorf("postback %s accepted %d times", key, len(reqs))
		}
		for _, r := range reqs {
			perClick[r.query.Get("click_id")]++
		}
	}
	if !maps.Equal(perClick, s.wantRequests) {
		t.Errorf("postbacks accepted per click %v, want %v", perClick, s.wantRequests)
	}
}
