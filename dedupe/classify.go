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
var classifyScript = redis.NewScript(luaPrelude + `
local a = redis.call('GET', KEYS[2])
if a then return {a, '1', ftd(KEYS[1])} end
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
  rec = ftd(KEYS[1])
end
redis.call('SET', KEYS[2], goal, 'PX', ARGV[5])
return {goal, rep, rec}
`)

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
	keys, args := s.classifyCall(d)
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
		calls[i].keys, calls[i].args = s.classifyCall(d)
	}
	defer s.observe("classify_batch", time.Now())
	cmds := s.runPipelined(ctx, classifyScript, calls)
	out := make([]Classification, len(ds))
	for i, c := range cmds {
		v, err := c.Result()
		if err == nil {
			out[i], err = parseClassification(v)
		}
		if err != nil {
			return nil, fmt.Errorf("dedupe: classify batch: deposit %d (event %s): %w", i, ds[i].EventID, err)
		}
	}
	return out, nil
}

func (s *Store) classifyCall(d Deposit) ([]string, []any) {
	params := ""
	if len(d.Route.Params) > 0 {
		// A map of strings always marshals.
		b, _ := json.Marshal(d.Route.Params)
		params = string(b)
	}
	return []string{s.clickKey(d.ClickID, "ftd"), s.clickKey(d.ClickID, "ans", d.EventID)},
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
		if err := json.Unmarshal([]byte(f[10]), &r.Route.Params); err != nil {
			return FTDRecord{}, corruptf("FTD route params: %w", err)
		}
	}
	return r, nil
}
