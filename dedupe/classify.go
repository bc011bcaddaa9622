package dedupe

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/postback"
)

// luaPrelude is shared by the click scripts. ftd() and parked() read a
// record as a fixed-size array with "" for missing fields, so scripts never
// return Lua false (whose reply type differs between RESP2 and RESP3).
// ftd(): 1 event_id, 2 amount, 3 currency, 4 occurred_at, 5 delivered,
// 6 status, 7 status_event_id, 8 failed, 9 route_partner, 10 route_via,
// 11 route_params (JSON, "" none). parked(): 1 event_id, 2 status,
// 3 payload, 4 parked_at, 5 released ("" waiting, "1" released to its status
// change, "2" dead-lettered).
const luaPrelude = `
local function fill(v, n)
  for i = 1, n do if not v[i] then v[i] = '' end end
  return v
end
local function ftd(key)
  return fill(redis.call('HMGET', key, 'event_id', 'amount', 'currency', 'occurred_at',
    'delivered', 'status', 'status_event_id', 'failed', 'route_partner', 'route_via', 'route_params'), 11)
end
local function parked(key)
  return fill(redis.call('HMGET', key, 'event_id', 'status', 'payload', 'parked_at', 'released'), 5)
end
`

// Deposit is a succeeded deposit to classify.
type Deposit struct {
	ClickID    string
	EventID    string
	Amount     string // decimal string, stored as given
	Currency   string
	OccurredAt time.Time
	// Route is the route the deposit's postback is sent with. When the
	// deposit is the FTD it is stored with the record, so the status change
	// goes where the FTD went, whatever happens to the click afterwards.
	Route Route
}

// FTDRecord is the click's first deposit. It never expires: it is what makes
// a later deposit an rdep and what a status change refers to.
type FTDRecord struct {
	EventID    string
	Amount     string
	Currency   string
	OccurredAt time.Time
	// Delivered is set by MarkDelivered(ftd) once the FTD postback went out.
	Delivered bool
	// Failure is the reason FailFTD recorded when the FTD postback was given
	// up on ("" when it was not). It is kept when a delivery follows (a
	// redelivered deposit the partner accepted after all): Delivered wins.
	Failure string
	// Status is the qualification status (approved/rejected) once decided;
	// StatusEventID is the qualification event that decided it.
	Status        string
	StatusEventID string
	// Route is the route the FTD was classified with (Deposit.Route); its
	// Partner is "" for a record written by a version that did not keep it.
	Route Route
}

// Exists reports whether r is a stored record (the zero value is not).
func (r FTDRecord) Exists() bool { return r.EventID != "" }

// Classification is the answer for one deposit.
type Classification struct {
	Goal postback.Goal // postback.GoalFTD or postback.GoalRD
	// FTD is the click's FTD record (this deposit's own for GoalFTD).
	FTD FTDRecord
	// Repeated: this event id was classified before; Goal is that answer.
	Repeated bool
}

// classifyScript: KEYS ftd, answer; ARGV event_id, amount, currency,
// occurred_at, ttl_ms, route_partner, route_via, route_params. Returns
// {goal, repeated, ftd fields}.
//
// An answer stored under the event id wins. Without one (first time, or the
// answer expired) the FTD record decides: its own event id is ftd again,
// no record makes this deposit the FTD, any other record makes it rdep.
var classifyScript = redis.NewScript(luaPrelude + luaClassify + `
local goal, rep, rec = classify()
return {goal, rep, rec}
`)

// luaClassify defines classify() for classifyScript and classifyClaimScript
// (KEYS[1], KEYS[2], ARGV[1..8] as classifyScript's), returning goal,
// repeated ('1' or '0') and the FTD record.
const luaClassify = `
local function classify()
  local a = redis.call('GET', KEYS[2])
  if a then return a, '1', ftd(KEYS[1]) end
  local rec = ftd(KEYS[1])
  local goal = 'rdep'
  local rep = '0'
  if rec[1] == ARGV[1] then
    goal = 'ftd'
    rep = '1'
  elseif rec[1] == '' then
    redis.call('HSET', KEYS[1], 'event_id', ARGV[1], 'amount', ARGV[2], 'currency', ARGV[3],
      'occurred_at', ARGV[4], 'delivered', '0', 'status', '', 'status_event_id', '',
      'route_partner', ARGV[6], 'route_via', ARGV[7], 'route_params', ARGV[8])
    goal = 'ftd'
    -- What ftd() would read back: every script that writes an FTD record
    -- writes its event_id, so one without is empty but for the fields above.
    rec = {ARGV[1], ARGV[2], ARGV[3], ARGV[4], '0', '', '', '', ARGV[6], ARGV[7], ARGV[8]}
  end
  redis.call('SET', KEYS[2], goal, 'PX', ARGV[5])
  return goal, rep, rec
end
`

// Classify decides, atomically and in one round trip, whether d is the
// click's FTD or an rdep, and remembers the answer under d.EventID for
// RecordTTL. A new FTD record keeps d.Route (the conversion's route). Safe to call twice: a redelivered deposit gets the same answer
// with Repeated set, and concurrent first deposits of one click (different
// event ids) yield exactly one FTD.
func (s *Store) Classify(ctx context.Context, d Deposit) (Classification, error) {
	if d.ClickID == "" || d.EventID == "" {
		return Classification{}, fmt.Errorf("dedupe: classify: %w", ErrEmptyID)
	}
	defer s.observe("classify", time.Now())
	keys, args := s.classifyCall(s.keysOf(d.ClickID), d)
	v, err := classifyScript.Run(ctx, s.rdb, keys, args...).Result()
	if err != nil {
		return Classification{}, fmt.Errorf("dedupe: classify: %w", err)
	}
	c, err := parseClassification(v)
	if err != nil {
		return Classification{}, fmt.Errorf("dedupe: classify: %w", err)
	}
	return c, nil
}

// ClassifyBatch classifies many deposits in one pipelined round trip; each
// deposit is its own atomic script, exactly as Classify. The results are in
// the order of ds. On error (naming the first failed deposit) some deposits
// may have been classified; calling it again is safe.
func (s *Store) ClassifyBatch(ctx context.Context, ds []Deposit) ([]Classification, error) {
	calls := make([]scriptCall, len(ds))
	for i, d := range ds {
		if d.ClickID == "" || d.EventID == "" {
			return nil, fmt.Errorf("dedupe: classify batch: deposit %d: %w", i, ErrEmptyID)
		}
		calls[i].keys, calls[i].args = s.classifyCall(s.keysOf(d.ClickID), d)
	}
	return runBatch(ctx, s, "classify_batch", "classify batch", classifyScript, calls,
		func(_ int, v any) (Classification, error) { return parseClassification(v) },
		func(i int) string { return fmt.Sprintf("deposit %d (event %s)", i, ds[i].EventID) })
}

func (s *Store) classifyCall(k clickKeys, d Deposit) ([]string, []any) {
	params := ""
	if len(d.Route.Params) > 0 {
		// A map of strings always marshals.
		b, _ := json.Marshal(d.Route.Params)
		params = string(b)
	}
	return []string{k.key("ftd"), k.key("ans", d.EventID)},
		[]any{d.EventID, d.Amount, d.Currency, formatTime(d.OccurredAt), s.ttlMS,
			d.Route.Partner, string(d.Route.Via), params}
}

func parseClassification(v any) (Classification, error) {
	a, err := asArray(v)
	if err != nil || len(a) != 3 {
		return Classification{}, corruptf("unexpected classify reply %v", v)
	}
	goal, _ := asString(a[0])
	rep, _ := asString(a[1])
	rec, err := parseFTD(a[2])
	if err != nil {
		return Classification{}, err
	}
	return Classification{Goal: postback.Goal(goal), FTD: rec, Repeated: rep == "1"}, nil
}

func parseFTD(v any) (FTDRecord, error) {
	f, err := asStrings(v)
	if err != nil || len(f) != 11 {
		return FTDRecord{}, corruptf("unexpected FTD record %v", v)
	}
	at, err := parseTime(f[3])
	if err != nil {
		return FTDRecord{}, corruptf("FTD occurred_at: %w", err)
	}
	r := FTDRecord{
		EventID: f[0], Amount: f[1], Currency: f[2], OccurredAt: at,
		Delivered: f[4] == "1", Status: f[5], StatusEventID: f[6], Failure: f[7],
		Route: Route{Partner: f[8], Via: RouteVia(f[9])},
	}
	if f[10] != "" {
		if r.Route.Params, err = decodeParams(f[10]); err != nil {
			return FTDRecord{}, corruptf("FTD route params: %w", err)
		}
	}
	return r, nil
}

// classifyClaimScript: KEYS ftd, answer (classifyScript's), then lease and
// done of the postback the deposit makes as the FTD, then lease and done of
// the one it makes as an rdep; ARGV classifyScript's eight, token, lease_ms.
// Returns {goal, repeated, ftd fields, claim state, claim detail}. The claim
// state is 'rerouted', and nothing is claimed, when the deposit is the FTD
// and its record keeps another route partner than ARGV[6]: its postback id
// names that partner, not the one the caller derived the ids from.
var classifyClaimScript = redis.NewScript(luaPrelude + luaClassify + luaClaim + `
local goal, rep, rec = classify()
if goal == 'ftd' and rec[9] ~= '' and rec[9] ~= ARGV[6] then
  return {goal, rep, rec, 'rerouted', ''}
end
local c
if goal == 'ftd' then
  c = claim(KEYS[3], KEYS[4], ARGV[9], ARGV[10])
else
  c = claim(KEYS[5], KEYS[6], ARGV[9], ARGV[10])
end
return {goal, rep, rec, c[1], c[2]}
`)

// ClassifyClaim is a deposit to classify together with the claim of the
// postback its classification calls for: the postback ids it has as the FTD
// and as an rdep (both derived from Deposit.Route.Partner), the lease, and
// the caller's claim token (NewClaimToken, required: the claim is re-entrant
// with it, as ClaimRequest.Token makes a claim).
type ClassifyClaim struct {
	Deposit       Deposit
	FTDPostbackID string
	RDPostbackID  string
	Lease         time.Duration
	Token         string
}

// ClassifiedClaim is the answer for one ClassifyClaim.
type ClassifiedClaim struct {
	Classification
	// Claim is the claim of the postback of Classification.Goal, as Claim
	// answers it. Nil when nothing was claimed: the deposit is the FTD and
	// its record keeps another route partner than Deposit.Route.Partner
	// (classified before with another route), so its postback is another
	// one, for the caller to claim.
	Claim *ClaimResult
}

// ClassifyClaimBatch classifies many deposits and claims the postback each
// one makes, one atomic script per deposit, all in one pipelined round trip:
// what Classify and then Claim would do, without the round trip between
// them. Each part keeps its own contract: a repeat gets the same
// classification with Repeated set, and a repeat with the same token gets
// the lease back. On error (naming the first failed deposit) some may have
// been classified and claimed; calling it again with the same tokens is
// safe.
func (s *Store) ClassifyClaimBatch(ctx context.Context, reqs []ClassifyClaim) ([]ClassifiedClaim, error) {
	calls := make([]scriptCall, len(reqs))
	for i, r := range reqs {
		d := r.Deposit
		if d.ClickID == "" || d.EventID == "" || r.FTDPostbackID == "" || r.RDPostbackID == "" || r.Token == "" {
			return nil, fmt.Errorf("dedupe: classify and claim batch: deposit %d: %w", i, ErrEmptyID)
		}
		if r.Lease < time.Millisecond {
			return nil, fmt.Errorf("dedupe: classify and claim batch: deposit %d: lease %s below 1ms", i, r.Lease)
		}
		// classifyClaimScript's keys and arguments: classifyScript's, then
		// claimScript's for each candidate postback (the same token and lease).
		k := s.keysOf(d.ClickID)
		keys, args := s.classifyCall(k, d)
		ftdLease, ftdDone := k.claimKeys(r.FTDPostbackID)
		rdLease, rdDone := k.claimKeys(r.RDPostbackID)
		calls[i].keys = append(keys, ftdLease, ftdDone, rdLease, rdDone)
		calls[i].args = append(args, claimArgs(r.Token, r.Lease)...)
	}
	return runBatch(ctx, s, "classify_claim_batch", "classify and claim batch", classifyClaimScript, calls,
		func(i int, v any) (ClassifiedClaim, error) { return parseClassifiedClaim(v, reqs[i].Token) },
		func(i int) string { return fmt.Sprintf("deposit %d (event %s)", i, reqs[i].Deposit.EventID) })
}

func parseClassifiedClaim(v any, token string) (ClassifiedClaim, error) {
	a, err := asArray(v)
	if err != nil || len(a) != 5 {
		return ClassifiedClaim{}, corruptf("unexpected classify and claim reply %v", v)
	}
	c, err := parseClassification(a[:3])
	if err != nil {
		return ClassifiedClaim{}, err
	}
	out := ClassifiedClaim{Classification: c}
	if state, _ := asString(a[3]); state == "rerouted" {
		return out, nil
	}
	claim, err := parseClaim(a[3:], token)
	if err != nil {
		return ClassifiedClaim{}, err
	}
	out.Claim = &claim
	return out, nil
}
