package dedupe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RouteVia says how a postback's partner was chosen. It is written to every
// audit record, so analysts can find the postbacks routed by default.
type RouteVia string

const (
	// RouteEvent: the event named its own network.
	RouteEvent RouteVia = "event"
	// RouteClick: the click's network, the first one it was attributed to.
	RouteClick RouteVia = "click"
	// RouteConversion: the route the FTD was sent with (its status change).
	RouteConversion RouteVia = "conversion"
	// RouteDefault: the merchant's default partner; nothing named one.
	RouteDefault RouteVia = "default"
)

// Route is where a postback goes: the partner, how it was chosen, and the
// params its URL is rendered with.
type Route struct {
	Partner string
	Via     RouteVia
	Params  map[string]string
}

// ClickContext is what the events of a click have told about it so far
// (see Attribute for the rule by which it accumulates).
type ClickContext struct {
	MerchantID string            `json:"merchant_id"`
	Network    string            `json:"network"`
	Params     map[string]string `json:"params,omitempty"`
	// FirstSeenAt is the time of the first event that contributed.
	FirstSeenAt time.Time `json:"first_seen_at"`
	// RegisteredAt is when the click's registration (or trial) was first
	// attributed; zero before. Events stop waiting once it is set.
	RegisteredAt time.Time `json:"registered_at"`
}

// Touch is one input event as attribution sees it: what it tells about its
// click, and how it may be routed.
type Touch struct {
	ClickID    string
	EventID    string
	MerchantID string
	// Network is the event's own network ("" when it names none). The caller
	// checks that it is a configured partner before calling: a network that
	// is not one must never become a click's partner.
	Network string
	// Params are the event's own params (empty values are ignored).
	Params map[string]string
	// DefaultPartner is the merchant's default partner ("" when it has none).
	DefaultPartner string
	// WaitPayload, when not nil, lets the event wait for the click's network
	// instead of being routed by default: it is stored under the event id
	// (StateWaiting) and handed back by the Attribute call that gives the
	// click a network (Attribution.Released), until FinishWaiting.
	WaitPayload []byte
	// Wait, when WaitPayload is nil, lets the event wait as well, with the
	// payload Wait returns. Attribute calls it only when the event is to
	// wait, and then runs the script once more with the payload (the first
	// run stores nothing of the wait), so an event whose click is known —
	// nearly every event in production — neither builds a payload nor
	// ships it to Redis. Wait must be a pure function of the event: it may
	// run on another goroutine (a batching caller's), more than once (a
	// batch retried call by call), or for an event that ends up routed
	// after all (its click learnt its network between the two runs). An
	// error from it fails the whole call, AttributeBatch's included.
	Wait func() ([]byte, error)
	// Registers: the event is the click's registration (or trial). Once a
	// click has one, or a network, its events no longer wait: what the
	// registration told is all the click will tell.
	Registers bool
	// Release asks for the click's waiting events once it has a network or
	// a registration.
	Release bool
	At      time.Time
}

// AttributionState is the outcome of Attribute.
type AttributionState int

const (
	// StateRouted: Attribution.Route says where the event's postbacks go.
	StateRouted AttributionState = iota + 1
	// StateWaiting: the click has neither a network nor a registration, the
	// event names no network, and it was stored to wait for one of them
	// (Touch.WaitPayload).
	StateWaiting
	// StateUnroutable: no network anywhere, no default partner, no wait.
	StateUnroutable
	// stateNeedsPayload: the event is to wait and its Touch.Wait was not
	// called yet. Internal to Attribute and AttributeBatch: never returned.
	stateNeedsPayload
)

func (s AttributionState) String() string {
	switch s {
	case StateRouted:
		return "routed"
	case StateWaiting:
		return "waiting"
	case StateUnroutable:
		return "unroutable"
	}
	return "AttributionState(" + strconv.Itoa(int(s)) + ")"
}

// Attribution is the answer of Attribute.
type Attribution struct {
	State AttributionState
	// Route is the event's route (StateRouted only).
	Route Route
	// Click is the click's context after the event contributed to it;
	// ClickFound is false when the click has none.
	Click      ClickContext
	ClickFound bool
	// Released are the click's waiting events (not this event itself), in
	// no particular order, when Touch.Release was set and the click has a
	// network or a registration now. They stay stored, and are handed back
	// again, until FinishWaiting.
	Released []WaitingEvent
}

// WaitingEvent is an event stored by Attribute to wait for its click's
// network.
type WaitingEvent struct {
	EventID string
	Payload []byte
}

// luaContext is shared by the scripts that read a click context: str() is a
// string field or "", context(key, ttl) the stored context as a table (empty
// when there is none or it does not decode: a broken context must not fail
// every event of its click) and its raw text (false when there is none).
// With ttl (ms) the read refreshes an existing context's TTL in the same
// command (GETEX, Redis 6.2 and later), as every event of an active click
// does. GETEX is a write: where Redis refuses writes (a failed background
// save, too few replicas) the attribution fails, and is retried, even for
// an event that would have written nothing; the rest of a deposit's path
// writes anyway.
const luaContext = `
local function str(v) if type(v) == 'string' then return v end return '' end
local function context(key, ttl)
  local raw
  if ttl then raw = redis.call('GETEX', key, 'PX', ttl) else raw = redis.call('GET', key) end
  local c = {}
  if raw then
    local ok, d = pcall(cjson.decode, raw)
    if ok and type(d) == 'table' then c = d end
  end
  return c, raw
end
`

// attributeScript: KEYS ctx, route memo (of this event), waiting; ARGV
// 1 event_id, 2 network, 3 params JSON ("" none), 4 merchant_id,
// 5 default partner, 6 wait payload ("" never wait, unless 11), 7 ttl_ms, 8 at,
// 9 release ("1"), 10 registers ("1"), 11 payload on request ("1": with
// ARGV[6] "", the event may wait, and the reply is "payload" instead of
// waiting, having stored nothing of the wait). Returns {state, partner, via, context JSON, found,
// released (event_id, payload, ...)}.
//
// The context accumulates: the first network is kept; params are added key
// by key when the event names no network or the click's, the first value of
// a key is kept, and empty values are ignored. A context is written only
// when something was added (then with a fresh TTL); reading it refreshes the
// TTL, so an active click is not forgotten.
//
// A route chosen from the click or by default is remembered under the event
// id (RecordTTL), so a redelivered event keeps its partner (hence its
// postback ids) whatever the click learnt since. An event's own network
// needs no memo: it is in the event, and it routes the event before any
// memo is read (none is ever written for such an event, so a redelivery
// routes the same without the read). That relies on an event id always
// carrying the same network, as a redelivery or replay of one event does:
// an event id published again with a network it did not have would go to
// that network, where the memo of its first route used to keep it.
//
// Empty tables are never encoded (cjson implementations disagree on "{}" or
// "[]"), and a context that does not decode is treated as empty rather than
// failing every event of the click.
var attributeScript = redis.NewScript(luaContext + `
local c, raw = context(KEYS[1], ARGV[7])
local changed = false
local net = ARGV[2]
local cnet = str(c.network)
if net ~= '' and cnet == '' then c.network = net; cnet = net; changed = true end
if ARGV[3] ~= '' and (net == '' or net == cnet) then
  local ps = c.params
  if type(ps) ~= 'table' then ps = {} end
  for k, v in pairs(cjson.decode(ARGV[3])) do
    if ps[k] == nil and type(v) == 'string' and v ~= '' then ps[k] = v; changed = true end
  end
  if next(ps) == nil then c.params = nil else c.params = ps end
end
local reg = str(c.registered_at)
if ARGV[10] == '1' and reg == '' then c.registered_at = ARGV[8]; reg = ARGV[8]; changed = true end
local known = cnet ~= '' or reg ~= ''
if changed then
  if str(c.merchant_id) == '' then c.merchant_id = ARGV[4] end
  if str(c.first_seen_at) == '' then c.first_seen_at = ARGV[8] end
  raw = cjson.encode(c)
  redis.call('SET', KEYS[1], raw, 'PX', ARGV[7])
end
local found = '0'
if raw then found = '1' else raw = '' end
local released = {}
if known and ARGV[9] == '1' then
  local all = redis.call('HGETALL', KEYS[3])
  for i = 1, #all, 2 do
    if all[i] ~= ARGV[1] and all[i + 1] ~= '-' then
      table.insert(released, all[i])
      table.insert(released, all[i + 1])
    end
  end
end
if net ~= '' then return {'routed', net, 'event', raw, found, released} end
local memo = redis.call('GET', KEYS[2])
if memo then
  local i = string.find(memo, '|', 1, true)
  if i then return {'routed', string.sub(memo, i + 1), string.sub(memo, 1, i - 1), raw, found, released} end
end
local partner, via = '', ''
if cnet ~= '' then
  partner, via = cnet, 'click'
elseif (ARGV[6] ~= '' or ARGV[11] == '1') and not known then
  if ARGV[6] == '' then return {'payload', '', '', raw, found, released} end
  if redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[6]) == 0 and redis.call('HGET', KEYS[3], ARGV[1]) == '-' then
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[6])
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
  return {'waiting', '', '', raw, found, released}
elseif ARGV[5] ~= '' then
  partner, via = ARGV[5], 'default'
else
  return {'unroutable', '', '', raw, found, released}
end
redis.call('SET', KEYS[2], via .. '|' .. partner, 'PX', ARGV[7])
return {'routed', partner, via, raw, found, released}
`)

// Attribute adds what t tells about its click to the click's context and
// routes the event, in one atomic script (run twice, two round trips, when
// the event is to wait and its payload comes from t.Wait):
//
//   - The context accumulates and is never erased: the first network a click
//     is attributed to is kept; an event naming another network is routed
//     there (RouteEvent) but changes nothing of the click. Params are added
//     key by key from every event that names no network or the click's; the
//     first value of a key is kept (so a redelivered or late event cannot
//     change what earlier postbacks were sent with); an event with none
//     changes nothing.
//   - The route: the event's own network; else a route remembered for this
//     event id (a redelivery: the same partner, so the same postback ids);
//     else the click's; else, when t.WaitPayload or t.Wait is set and the
//     click has no registration either, the event waits (StateWaiting); else the
//     merchant's default; else StateUnroutable.
//     Route.Params are the click's params overlaid by the event's own; an
//     event routed to a network other than the click's gets its own only
//     (one network's fields are never sent to another).
//   - Waiting is decided in the same script that gives a click its network
//     or its registration, so an event never waits for what has just
//     arrived: either it sees it, or the event that brings it sees it
//     waiting and (with t.Release) gets it back in Released.
//
// Safe to call twice: a repeat adds nothing new and routes the same way.
func (s *Store) Attribute(ctx context.Context, t Touch) (Attribution, error) {
	a, err := s.attributeOnce(ctx, "attribute", t)
	if err == nil && a.State == stateNeedsPayload {
		if t, err = withWaitPayload(t); err == nil {
			a, err = givenPayload(s.attributeOnce(ctx, "attribute_wait", t))
		}
	}
	if err != nil {
		return Attribution{}, fmt.Errorf("dedupe: attribute: %w", err)
	}
	return a, nil
}

// attributeOnce runs the script once for t, timed as op.
func (s *Store) attributeOnce(ctx context.Context, op string, t Touch) (Attribution, error) {
	keys, args, err := s.attributeCall(t)
	if err != nil {
		return Attribution{}, err
	}
	defer s.observe(op, time.Now())
	v, err := attributeScript.Run(ctx, s.rdb, keys, args...).Result()
	if err != nil {
		return Attribution{}, err
	}
	return parseAttribution(v, t)
}

// givenPayload checks the answer of a call that carried its wait payload:
// the script cannot ask for it again.
func givenPayload(a Attribution, err error) (Attribution, error) {
	if err == nil && a.State == stateNeedsPayload {
		err = corruptf("attribute asked for a wait payload it was given")
	}
	return a, err
}

// withWaitPayload returns t with the payload of its Wait.
func withWaitPayload(t Touch) (Touch, error) {
	b, err := t.Wait()
	if err != nil {
		return t, fmt.Errorf("wait payload of event %s: %w", t.EventID, err)
	}
	if len(b) == 0 {
		return t, fmt.Errorf("wait payload of event %s is empty", t.EventID)
	}
	t.WaitPayload, t.Wait = b, nil
	return t, nil
}

// AttributeBatch attributes many events in one pipelined round trip (a
// second one for those that are to wait with a payload from Touch.Wait,
// timed as attribute_wait_batch); each is its own atomic script, exactly
// as Attribute. On error (naming the first
// failed event) some may have been attributed; calling it again is safe.
func (s *Store) AttributeBatch(ctx context.Context, ts []Touch) ([]Attribution, error) {
	calls := make([]scriptCall, len(ts))
	for i, t := range ts {
		var err error
		if calls[i].keys, calls[i].args, err = s.attributeCall(t); err != nil {
			return nil, fmt.Errorf("dedupe: attribute batch: event %d: %w", i, err)
		}
	}
	out, err := runBatch(ctx, s, "attribute_batch", "attribute batch", attributeScript, calls,
		func(i int, v any) (Attribution, error) { return parseAttribution(v, ts[i]) },
		func(i int) string { return fmt.Sprintf("event %d (%s)", i, ts[i].EventID) })
	if err != nil {
		return nil, err
	}
	// The events that are to wait run again, with their payloads, in a
	// second batch (rare once clicks register before they deposit).
	var again []int
	var touches []Touch
	for i, a := range out {
		if a.State != stateNeedsPayload {
			continue
		}
		t, err := withWaitPayload(ts[i])
		if err != nil {
			return nil, fmt.Errorf("dedupe: attribute batch: event %d: %w", i, err)
		}
		again, touches = append(again, i), append(touches, t)
	}
	if len(again) == 0 {
		return out, nil
	}
	calls = calls[:len(again)]
	for j, t := range touches {
		if calls[j].keys, calls[j].args, err = s.attributeCall(t); err != nil {
			return nil, fmt.Errorf("dedupe: attribute batch: event %d: %w", again[j], err)
		}
	}
	second, err := runBatch(ctx, s, "attribute_wait_batch", "attribute batch", attributeScript, calls,
		func(j int, v any) (Attribution, error) { return givenPayload(parseAttribution(v, touches[j])) },
		func(j int) string { return fmt.Sprintf("event %d (%s)", again[j], touches[j].EventID) })
	if err != nil {
		return nil, err
	}
	for j, i := range again {
		out[i] = second[j]
	}
	return out, nil
}

func (s *Store) attributeCall(t Touch) ([]string, []any, error) {
	if t.ClickID == "" || t.EventID == "" {
		return nil, nil, ErrEmptyID
	}
	params := ""
	if len(t.Params) > 0 {
		b, err := json.Marshal(t.Params)
		if err != nil {
			return nil, nil, err
		}
		params = string(b)
	}
	release, registers, onRequest := "0", "0", "0"
	if t.WaitPayload == nil && t.Wait != nil {
		onRequest = "1"
	}
	if t.Release {
		release = "1"
	}
	if t.Registers {
		registers = "1"
	}
	k := s.keysOf(t.ClickID)
	return []string{k.key("ctx"), k.key("route", t.EventID), k.key("await")},
		[]any{t.EventID, t.Network, params, t.MerchantID, t.DefaultPartner, string(t.WaitPayload), s.ttlMS, formatTime(t.At), release, registers, onRequest}, nil
}

func parseAttribution(v any, t Touch) (Attribution, error) {
	a, err := asArray(v)
	if err != nil || len(a) != 6 {
		return Attribution{}, corruptf("unexpected attribute reply %v", v)
	}
	f, err := asStrings(a[:5])
	if err != nil {
		return Attribution{}, err
	}
	rel, err := asStrings(a[5])
	if err != nil || len(rel)%2 != 0 {
		return Attribution{}, corruptf("unexpected released events %v", a[5])
	}
	var r Attribution
	if f[4] == "1" {
		if r.Click, err = decodeClickContext(f[3]); err != nil {
			return Attribution{}, corruptf("click context: %w", err)
		}
		r.ClickFound = true
	}
	for i := 0; i < len(rel); i += 2 {
		r.Released = append(r.Released, WaitingEvent{EventID: rel[i], Payload: []byte(rel[i+1])})
	}
	switch f[0] {
	case "routed":
		r.State = StateRouted
		r.Route = Route{Partner: f[1], Via: RouteVia(f[2])}
		r.Route.Params = routeParams(r.Route.Partner, r.Click, t.Params)
	case "waiting":
		r.State = StateWaiting
	case "payload":
		r.State = stateNeedsPayload
	case "unroutable":
		r.State = StateUnroutable
	default:
		return Attribution{}, corruptf("unexpected attribution state %q", f[0])
	}
	return r, nil
}

// routeParams are the params of an event routed to partner: the click's
// overlaid by the event's own, or the event's own only when partner is not
// the click's network.
func routeParams(partner string, click ClickContext, own map[string]string) map[string]string {
	if click.Network != "" && partner != click.Network || len(click.Params) == 0 {
		return own
	}
	out := make(map[string]string, len(click.Params)+len(own))
	maps.Copy(out, click.Params)
	for k, v := range own {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// finishWaitingScript: KEYS waiting; ARGV event ids. Marks each event that
// is stored "-" (done), keeping the field until the hash's TTL so that a
// redelivery of the event is not stored to wait again.
var finishWaitingScript = redis.NewScript(`
for i = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then redis.call('HSET', KEYS[1], ARGV[i], '-') end
end
return 'OK'
`)

// FinishWaiting marks waiting events of the click done: they are no longer
// handed out by Attribute. Call it once their outcome is durable. Safe to
// call twice, and for events that never waited.
func (s *Store) FinishWaiting(ctx context.Context, clickID string, eventIDs ...string) error {
	if clickID == "" {
		return fmt.Errorf("dedupe: finish waiting: %w", ErrEmptyID)
	}
	if len(eventIDs) == 0 {
		return nil
	}
	_, err := s.FinishWaitingBatch(ctx, []FinishedWaits{{ClickID: clickID, EventIDs: eventIDs}})
	return err
}

// FinishedWaits names waiting events of one click to mark done.
type FinishedWaits struct {
	ClickID  string
	EventIDs []string
}

// FinishWaitingBatch marks the waiting events of many clicks done in one
// pipelined round trip, each click exactly as FinishWaiting does. On error
// (naming the first click that failed) some may have been marked; calling
// it again is safe.
func (s *Store) FinishWaitingBatch(ctx context.Context, fs []FinishedWaits) ([]struct{}, error) {
	calls := make([]scriptCall, 0, len(fs))
	for i, f := range fs {
		if f.ClickID == "" {
			return nil, fmt.Errorf("dedupe: finish waiting: click %d: %w", i, ErrEmptyID)
		}
		args := make([]any, len(f.EventIDs))
		for j, id := range f.EventIDs {
			if id == "" {
				return nil, fmt.Errorf("dedupe: finish waiting: click %q: %w", f.ClickID, ErrEmptyID)
			}
			args[j] = id
		}
		calls = append(calls, scriptCall{keys: []string{s.clickKey(f.ClickID, "await")}, args: args})
	}
	return runBatch(ctx, s, "finish_waiting", "finish waiting", finishWaitingScript, calls, ignoreReply,
		func(i int) string { return fmt.Sprintf("click %q", fs[i].ClickID) })
}

// WaitState is what Redis holds of one waiting event.
type WaitState int

const (
	// WaitPending: the event still waits (stored, not finished).
	WaitPending WaitState = iota + 1
	// WaitFinished: FinishWaiting marked it done.
	WaitFinished
	// WaitMissing: nothing is stored for it: it never waited, or its record
	// lapsed (RecordTTL, or lost Redis data).
	WaitMissing
)

// Waiting reports the state of the click's waiting event eventID.
func (s *Store) Waiting(ctx context.Context, clickID, eventID string) (WaitState, error) {
	if clickID == "" || eventID == "" {
		return 0, fmt.Errorf("dedupe: waiting: %w", ErrEmptyID)
	}
	defer s.observe("waiting", time.Now())
	v, err := s.rdb.HGet(ctx, s.clickKey(clickID, "await"), eventID).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return WaitMissing, nil
	case err != nil:
		return 0, fmt.Errorf("dedupe: waiting: %w", err)
	case v == "-":
		return WaitFinished, nil
	}
	return WaitPending, nil
}

// PendingWaits returns the click's events that still wait (stored by
// Attribute, not finished), in no particular order.
func (s *Store) PendingWaits(ctx context.Context, clickID string) ([]WaitingEvent, error) {
	if clickID == "" {
		return nil, fmt.Errorf("dedupe: pending waits: %w", ErrEmptyID)
	}
	defer s.observe("pending_waits", time.Now())
	all, err := s.rdb.HGetAll(ctx, s.clickKey(clickID, "await")).Result()
	if err != nil {
		return nil, fmt.Errorf("dedupe: pending waits: %w", err)
	}
	var out []WaitingEvent
	for id, v := range all {
		if v != "-" {
			out = append(out, WaitingEvent{EventID: id, Payload: []byte(v)})
		}
	}
	return out, nil
}

// LoadClick returns the click's context, and false when none is stored
// (no event contributed to it yet, or it expired). It reads only.
func (s *Store) LoadClick(ctx context.Context, clickID string) (ClickContext, bool, error) {
	if clickID == "" {
		return ClickContext{}, false, fmt.Errorf("dedupe: load click: %w", ErrEmptyID)
	}
	defer s.observe("load_click", time.Now())
	b, err := s.rdb.Get(ctx, s.clickKey(clickID, "ctx")).Bytes()
	if errors.Is(err, redis.Nil) {
		return ClickContext{}, false, nil
	}
	if err != nil {
		return ClickContext{}, false, fmt.Errorf("dedupe: load click: %w", err)
	}
	c, err := decodeClickContext(string(b))
	if err != nil {
		return ClickContext{}, false, corruptf("dedupe: load click: %w", err)
	}
	return c, true, nil
}
