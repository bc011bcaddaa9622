package dedupe

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/postback"
)

// RestoredClick is what a rebuild knows about one click from the audit
// trail: the state that guards money (the FTD record, the final outcome of
// each postback, the answers and routes of its events, its context). Restore
// writes it where Redis has nothing and merges it where Redis already holds
// something, so it is safe to run twice and beside state written since.
type RestoredClick struct {
	ClickID string
	// Context, when not nil, is merged into the click's context (first
	// network kept, params added key by key, nothing replaced); it lives
	// ContextTTL (nothing is written when that is not positive).
	Context    *ClickContext
	ContextTTL time.Duration
	// FTD, when not nil, is the click's FTD record: created when the click
	// has none; merged into one with the same event id (delivered, status
	// and failure are facts added, never taken back); left alone, and
	// reported as a conflict, when the click's record names another deposit.
	FTD *FTDRecord
	// Answers are classification answers by event id (GoalFTD or GoalRD).
	Answers []RestoredItem[postback.Goal]
	// Routes are route memos by event id (click or default routes).
	Routes []RestoredItem[Route]
	// Deliveries are final outcomes by postback id: a delivery, or a refusal
	// (Delivery.Refused set) that must not be sent again either.
	Deliveries []RestoredItem[Delivery]
}

// RestoredItem is one keyed value of a RestoredClick and how long it has
// left to live (its RecordTTL from when it was first written). Items whose
// TTL is not positive are not written: they would have expired anyway.
type RestoredItem[T any] struct {
	ID    string
	Value T
	TTL   time.Duration
}

// FTDRestore says what Restore did with a RestoredClick's FTD record.
type FTDRestore string

const (
	// FTDNone: the RestoredClick had no FTD record.
	FTDNone FTDRestore = ""
	// FTDCreated: the click had no FTD record; it has the restored one.
	FTDCreated FTDRestore = "created"
	// FTDMerged: the click had the same FTD; facts it lacked were added.
	FTDMerged FTDRestore = "merged"
	// FTDKept: the click had the same FTD with every fact already.
	FTDKept FTDRestore = "kept"
	// FTDConflict: the click's record names another deposit (classified
	// after the loss, before the rebuild): nothing was written to it.
	FTDConflict FTDRestore = "conflict"
)

// RestoreResult is what Restore wrote for one click.
type RestoreResult struct {
	FTD FTDRestore
	// ExistingFTD is the event id of the record that was kept (FTDConflict).
	ExistingFTD string
	// Context: the context was created or changed.
	Context bool
	// Answers, Routes and Deliveries count the items written (an item
	// already present is kept and not counted).
	Answers, Routes, Deliveries int
}

// restoreScript: KEYS 1 ctx, 2 ftd, then the item keys (answers, routes,
// deliveries, in that order); ARGV 1 context JSON ("" none), 2 context TTL
// ms, 3 has FTD ("1"), 4..14 the FTD fields (event_id amount currency
// occurred_at delivered status status_event_id failed route_partner
// route_via route_params), 15 answers count, 16 routes count, then for
// every item key its value and TTL ms. Returns {ftd outcome, existing ftd
// event id, context changed, answers, routes, deliveries}.
var restoreScript = redis.NewScript(luaPrelude + luaContext + `
local ctxChanged = '0'
if ARGV[1] ~= '' and tonumber(ARGV[2]) > 0 then
  local r = cjson.decode(ARGV[1])
  local c = context(KEYS[1])
  local changed = false
  for _, f in ipairs({'merchant_id', 'network', 'first_seen_at', 'registered_at'}) do
    if str(c[f]) == '' and str(r[f]) ~= '' then c[f] = r[f]; changed = true end
  end
  if type(r.params) == 'table' then
    local ps = c.params
    if type(ps) ~= 'table' then ps = {} end
    for k, v in pairs(r.params) do
      if ps[k] == nil and type(v) == 'string' and v ~= '' then ps[k] = v; changed = true end
    end
    if next(ps) == nil then c.params = nil else c.params = ps end
  end
  if changed then
    redis.call('SET', KEYS[1], cjson.encode(c), 'PX', ARGV[2])
    ctxChanged = '1'
  end
end
local ftdOut, existing = '', ''
if ARGV[3] == '1' then
  local rec = ftd(KEYS[2])
  if rec[1] == '' then
    redis.call('HSET', KEYS[2], 'event_id', ARGV[4], 'amount', ARGV[5], 'currency', ARGV[6],
      'occurred_at', ARGV[7], 'delivered', ARGV[8], 'status', ARGV[9], 'status_event_id', ARGV[10],
      'failed', ARGV[11], 'route_partner', ARGV[12], 'route_via', ARGV[13], 'route_params', ARGV[14])
    ftdOut = 'created'
  elseif rec[1] ~= ARGV[4] then
    ftdOut, existing = 'conflict', rec[1]
  else
    ftdOut = 'kept'
    if ARGV[8] == '1' and rec[5] ~= '1' then
      redis.call('HSET', KEYS[2], 'delivered', '1'); ftdOut = 'merged'
    end
    if rec[6] == '' and ARGV[9] ~= '' then
      redis.call('HSET', KEYS[2], 'status', ARGV[9], 'status_event_id', ARGV[10]); ftdOut = 'merged'
    end
    if rec[8] == '' and ARGV[11] ~= '' and rec[5] ~= '1' and ARGV[8] ~= '1' then
      redis.call('HSET', KEYS[2], 'failed', ARGV[11]); ftdOut = 'merged'
    end
    if rec[9] == '' and ARGV[12] ~= '' then
      redis.call('HSET', KEYS[2], 'route_partner', ARGV[12], 'route_via', ARGV[13], 'route_params', ARGV[14]); ftdOut = 'merged'
    end
  end
end
local nAnswers, nRoutes = tonumber(ARGV[15]), tonumber(ARGV[16])
local counts = {0, 0, 0}
for i = 3, #KEYS do
  local a = 17 + (i - 3) * 2
  if redis.call('SET', KEYS[i], ARGV[a], 'NX', 'PX', ARGV[a + 1]) then
    local n = i - 2
    if n <= nAnswers then counts[1] = counts[1] + 1
    elseif n <= nAnswers + nRoutes then counts[2] = counts[2] + 1
    else counts[3] = counts[3] + 1 end
  end
end
return {ftdOut, existing, ctxChanged, tostring(counts[1]), tostring(counts[2]), tostring(counts[3])}
`)

// RestoreBatch writes many clicks in one pipelined round trip, one atomic
// script per click; results are in the order of clicks. On error (naming
// the first click that failed) some clicks may have been written; calling it
// again is safe: Restore only adds what is missing.
func (s *Store) RestoreBatch(ctx context.Context, clicks []RestoredClick) ([]RestoreResult, error) {
	calls := make([]scriptCall, len(clicks))
	for i, c := range clicks {
		if c.ClickID == "" {
			return nil, fmt.Errorf("dedupe: restore: click %d: %w", i, ErrEmptyID)
		}
		keys, args, err := s.restoreCall(c)
		if err != nil {
			return nil, fmt.Errorf("dedupe: restore: click %s: %w", c.ClickID, err)
		}
		calls[i] = scriptCall{keys, args}
	}
	return runBatch(ctx, s, "restore", "restore", restoreScript, calls,
		func(_ int, v any) (RestoreResult, error) { return parseRestore(v) },
		func(i int) string { return "click " + clicks[i].ClickID })
}

func (s *Store) restoreCall(c RestoredClick) ([]string, []any, error) {
	keys := []string{s.clickKey(c.ClickID, "ctx"), s.clickKey(c.ClickID, "ftd")}
	args := make([]any, 0, 16+2*(len(c.Answers)+len(c.Routes)+len(c.Deliveries)))
	if c.Context != nil && c.ContextTTL >= time.Millisecond {
		b, err := json.Marshal(restoredContext(*c.Context))
		if err != nil {
			return nil, nil, err
		}
		args = append(args, string(b), c.ContextTTL.Milliseconds())
	} else {
		args = append(args, "", 0)
	}
	if f := c.FTD; f != nil {
		if f.EventID == "" {
			return nil, nil, fmt.Errorf("FTD record: %w", ErrEmptyID)
		}
		params := ""
		if len(f.Route.Params) > 0 {
			b, err := json.Marshal(f.Route.Params)
			if err != nil {
				return nil, nil, err
			}
			params = string(b)
		}
		occurred := ""
		if !f.OccurredAt.IsZero() {
			occurred = formatTime(f.OccurredAt)
		}
		delivered := "0"
		if f.Delivered {
			delivered = "1"
		}
		args = append(args, "1", f.EventID, f.Amount, f.Currency, occurred, delivered,
			f.Status, f.StatusEventID, f.Failure, f.Route.Partner, string(f.Route.Via), params)
	} else {
		args = append(args, "0", "", "", "", "", "", "", "", "", "", "", "")
	}
	var answers, routes, deliveries int
	add := func(key, value string, ttl time.Duration) bool {
		if ttl < time.Millisecond {
			return false
		}
		keys = append(keys, key)
		args = append(args, value, ttl.Milliseconds())
		return true
	}
	for _, a := range c.Answers {
		if a.Value != postback.GoalFTD && a.Value != postback.GoalRD {
			return nil, nil, fmt.Errorf("answer of %s: %q is not ftd or rdep", a.ID, a.Value)
		}
		if add(s.clickKey(c.ClickID, "ans", a.ID), string(a.Value), a.TTL) {
			answers++
		}
	}
	for _, r := range c.Routes {
		if r.Value.Partner == "" || r.Value.Via == "" {
			return nil, nil, fmt.Errorf("route of %s: partner and via are required", r.ID)
		}
		if add(s.clickKey(c.ClickID, "route", r.ID), string(r.Value.Via)+"|"+r.Value.Partner, r.TTL) {
			routes++
		}
	}
	for _, d := range c.Deliveries {
		b, err := json.Marshal(d.Value)
		if err != nil {
			return nil, nil, err
		}
		if add(s.clickKey(c.ClickID, "done", d.ID), string(b), d.TTL) {
			deliveries++
		}
	}
	args = append(args[:14:14], append([]any{answers, routes}, args[14:]...)...)
	return keys, args, nil
}

// restoredContext is a ClickContext as the attribution script stores it:
// times as RFC 3339 strings, "" when unknown (the script fills only fields
// that are empty in Redis).
func restoredContext(c ClickContext) map[string]any {
	m := map[string]any{"merchant_id": c.MerchantID, "network": c.Network}
	if len(c.Params) > 0 {
		m["params"] = c.Params
	}
	if !c.FirstSeenAt.IsZero() {
		m["first_seen_at"] = formatTime(c.FirstSeenAt)
	}
	if !c.RegisteredAt.IsZero() {
		m["registered_at"] = formatTime(c.RegisteredAt)
	}
	return m
}

func parseRestore(v any) (RestoreResult, error) {
	a, err := asStrings(v)
	if err != nil || len(a) != 6 {
		return RestoreResult{}, corruptf("unexpected restore reply %v", v)
	}
	r := RestoreResult{FTD: FTDRestore(a[0]), ExistingFTD: a[1], Context: a[2] == "1"}
	for i, p := range []*int{&r.Answers, &r.Routes, &r.Deliveries} {
		if *p, err = strconv.Atoi(a[3+i]); err != nil {
			return RestoreResult{}, corruptf("unexpected restore reply %v", v)
		}
	}
	return r, nil
}
