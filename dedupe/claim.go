package dedupe

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/internal/jsonfast"
)

// ClaimState is the outcome of Claim.
type ClaimState int

const (
	// ClaimAcquired: the caller holds the lease and may send.
	ClaimAcquired ClaimState = iota + 1
	// ClaimHeld: another holder's lease is unexpired; wait RetryAfter and
	// claim again.
	ClaimHeld
	// ClaimDelivered: the postback was delivered before; do not send.
	ClaimDelivered
)

func (c ClaimState) String() string {
	switch c {
	case ClaimAcquired:
		return "acquired"
	case ClaimHeld:
		return "held"
	case ClaimDelivered:
		return "delivered"
	}
	return "ClaimState(" + strconv.Itoa(int(c)) + ")"
}

// Delivery is what was recorded when a postback got its final answer. URL
// (and Refused) must already have their secrets redacted: the store keeps
// them as given.
type Delivery struct {
	HTTPStatus  int       `json:"http_status"`
	Attempts    int       `json:"attempts"`
	DeliveredAt time.Time `json:"delivered_at"`
	URL         string    `json:"url"`
	// Refused, when set, says the partner refused the postback for good
	// (why, redacted): it is final like a delivery — never sent again — but
	// it was not delivered.
	Refused string `json:"refused,omitempty"`
}

// ClaimResult is the answer of Claim.
type ClaimResult struct {
	State ClaimState
	// Token identifies the lease (ClaimAcquired only); pass it to Release.
	// MarkDelivered needs none: a recorded answer ends the lease, whoever
	// holds it.
	Token string
	// Delivery is the recorded delivery (ClaimDelivered only).
	Delivery Delivery
	// RetryAfter is the remaining lease of the other holder (ClaimHeld only).
	RetryAfter time.Duration
}

// FTDDelivered tells MarkDelivered that the postback was the click's FTD.
type FTDDelivered struct {
	EventID string // the FTD's deposit event id
}

// claimScript: KEYS lease, done; ARGV token, lease_ms.
var claimScript = redis.NewScript(luaClaim + `
return claim(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
`)

// luaClaim defines claim(lease, done, token, lease_ms) for claimScript and
// classifyClaimScript, returning {state, detail}.
const luaClaim = `
local function claim(lease, done, token, ms)
  local d = redis.call('GET', done)
  if d then return {'delivered', d} end
  if redis.call('SET', lease, token, 'NX', 'PX', ms) then return {'acquired', ''} end
  if redis.call('GET', lease) == token then
    redis.call('PEXPIRE', lease, ms)
    return {'acquired', ''}
  end
  return {'held', tostring(redis.call('PTTL', lease))}
end
`

// Claim guards the send of one postback. At most one caller holds an
// unexpired lease at a time; each acquisition gets a fresh random token.
// The lease must outlast a full attempt (all in-place retries): when it
// expires mid-send another caller may send again (the partner's transaction
// id dedupe covers that rare case). Safe to call twice: a second call by the
// holder reports ClaimHeld, after delivery every call reports ClaimDelivered
// (for RecordTTL).
func (s *Store) Claim(ctx context.Context, clickID, postbackID string, lease time.Duration) (ClaimResult, error) {
	if clickID == "" || postbackID == "" {
		return ClaimResult{}, fmt.Errorf("dedupe: claim: %w", ErrEmptyID)
	}
	if lease < time.Millisecond {
		return ClaimResult{}, fmt.Errorf("dedupe: claim: lease %s below 1ms", lease)
	}
	defer s.observe("claim", time.Now())
	token, err := newToken()
	if err != nil {
		return ClaimResult{}, fmt.Errorf("dedupe: claim: token: %w", err)
	}
	keys, args := s.claimCall(clickID, postbackID, token, lease)
	v, err := claimScript.Run(ctx, s.rdb, keys, args...).Result()
	if err == nil {
		var r ClaimResult
		if r, err = parseClaim(v, token); err == nil {
			return r, nil
		}
	}
	return ClaimResult{}, fmt.Errorf("dedupe: claim: %w", err)
}

// ClaimRequest is one claim of ClaimBatch.
type ClaimRequest struct {
	ClickID    string
	PostbackID string
	Lease      time.Duration
	// Token, when set (NewClaimToken), makes the claim re-entrant: a claim
	// with the token that already holds the lease acquires it again (and
	// renews it). A caller that retries a claim whose answer it lost passes
	// the same token, so the lease it may have taken is not orphaned.
	// Empty: a fresh token.
	Token string
}

// NewClaimToken returns a random claim token for ClaimRequest.Token.
func NewClaimToken() (string, error) { return newToken() }

// ClaimBatch claims many postbacks in one pipelined round trip, each exactly
// as Claim, results in the order of reqs. On error (naming the first failed
// claim) some leases may have been acquired without the caller learning
// their tokens: a retry with the same ClaimRequest.Token gets them back;
// without one they are claimable again once the lease expires.
func (s *Store) ClaimBatch(ctx context.Context, reqs []ClaimRequest) ([]ClaimResult, error) {
	calls := make([]scriptCall, len(reqs))
	tokens := make([]string, len(reqs))
	for i, r := range reqs {
		if r.ClickID == "" || r.PostbackID == "" {
			return nil, fmt.Errorf("dedupe: claim batch: claim %d: %w", i, ErrEmptyID)
		}
		if r.Lease < time.Millisecond {
			return nil, fmt.Errorf("dedupe: claim batch: claim %d: lease %s below 1ms", i, r.Lease)
		}
		t := r.Token
		if t == "" {
			var err error
			if t, err = newToken(); err != nil {
				return nil, fmt.Errorf("dedupe: claim batch: token: %w", err)
			}
		}
		tokens[i] = t
		calls[i].keys, calls[i].args = s.claimCall(r.ClickID, r.PostbackID, t, r.Lease)
	}
	return runBatch(ctx, s, "claim_batch", "claim batch", claimScript, calls,
		func(i int, v any) (ClaimResult, error) { return parseClaim(v, tokens[i]) },
		func(i int) string { return fmt.Sprintf("claim %d (postback %s)", i, reqs[i].PostbackID) })
}

func (s *Store) claimCall(clickID, postbackID, token string, lease time.Duration) ([]string, []any) {
	leaseKey, done := s.keysOf(clickID).claimKeys(postbackID)
	return []string{leaseKey, done}, claimArgs(token, lease)
}

// claimKeys are claimScript's KEYS for postbackID: its lease and its
// delivered mark (also markScript's first two).
func (k clickKeys) claimKeys(postbackID string) (lease, done string) {
	return k.key("lease", postbackID), k.key("done", postbackID)
}

// claimArgs are claimScript's ARGV.
func claimArgs(token string, lease time.Duration) []any {
	return []any{token, lease.Milliseconds()}
}

func parseClaim(v any, token string) (ClaimResult, error) {
	r, err := asStrings(v)
	if err != nil || len(r) != 2 {
		return ClaimResult{}, corruptf("unexpected claim reply %v", v)
	}
	switch r[0] {
	case "acquired":
		return ClaimResult{State: ClaimAcquired, Token: token}, nil
	case "held":
		ms, _ := strconv.ParseInt(r[1], 10, 64)
		return ClaimResult{State: ClaimHeld, RetryAfter: time.Duration(max(ms, 1)) * time.Millisecond}, nil
	case "delivered":
		var d Delivery
		if err := json.Unmarshal([]byte(r[1]), &d); err != nil {
			return ClaimResult{}, corruptf("delivery record: %w", err)
		}
		return ClaimResult{State: ClaimDelivered, Delivery: d}, nil
	}
	return ClaimResult{}, corruptf("unexpected claim state %q", r[0])
}

// markScript: KEYS lease, done, ftd, parked; ARGV delivery, ttl_ms,
// ftd_event_id. It marks the delivery of a click's FTD; a postback that is
// not the FTD is marked without a script (markPlain). Returns {'ok'},
// {'notftd'} or {'taken', parked fields}.
var markScript = redis.NewScript(luaPrelude + `
redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
if redis.call('HGET', KEYS[3], 'event_id') ~= ARGV[3] then return {'notftd'} end
redis.call('HSET', KEYS[3], 'delivered', '1')
local p = parked(KEYS[4])
if p[1] == '' or p[5] == '2' then return {'ok'} end
if p[5] == '' then
  redis.call('HSET', KEYS[4], 'released', '1')
  local st = redis.call('HGET', KEYS[3], 'status')
  if not st or st == '' then
    redis.call('HSET', KEYS[3], 'status', p[2], 'status_event_id', p[1])
  end
end
return {'taken', p}
`)

// MarkDelivered records the postback's final answer — delivered, or refused
// for good when d.Refused is set (then give no ftd) — keeping d for
// RecordTTL, even if the caller's lease expired meanwhile (a delivery is a
// fact). The first recorded delivery is kept: calling it twice is safe.
//
// Once the answer is recorded the postback's lease guards nothing (every
// claim reads the answer before the lease), so the mark drops the lease
// whoever holds it and needs no token: a holder whose lease had lapsed and
// was taken by another marks the delivery all the same, and the other's
// send, already under way, ends in a mark that keeps the first answer or a
// Release that finds nothing. That makes the mark of a postback that is not
// the FTD two plain commands, SET NX of the answer and, once Redis has
// recorded it, DEL of the lease (a round trip later: see mark), with no
// script: a third less of Redis's CPU for the send guard
// (BenchmarkDepositPath).
//
// When ftd is non-nil the postback was the click's FTD: the FTD record is
// marked delivered and a parked qualification, if any, is released and
// returned, with its status recorded on the FTD record, all in the same
// script, so a qualification is released without a race and a later
// contradicting one is a conflict. The caller sends the status change for
// the returned Parked. Release is idempotent rather than a delete: the
// parked record stays (marked released, for RecordTTL) and a repeated
// MarkDelivered(ftd) returns it again, so a lost reply or a crash before the
// status change was sent does not lose the qualification (the status
// change's own claim makes a resend a no-op). A released record is no
// longer parked for Qualify, TakeOrphan or FailFTD. A qualification
// dead-lettered by FailFTD is never released: it went to the DLQ, even if
// the FTD is delivered after all. ErrNotFTD if ftd.EventID is not the
// click's FTD (its record was lost, or names another deposit): the delivery
// is recorded all the same — the partner accepted it, so it must never be
// sent again — but the FTD record is not touched and nothing is released.
func (s *Store) MarkDelivered(ctx context.Context, clickID, postbackID string, d Delivery, ftd *FTDDelivered) (*Parked, error) {
	if clickID == "" || postbackID == "" || (ftd != nil && ftd.EventID == "") {
		return nil, fmt.Errorf("dedupe: mark delivered: %w", ErrEmptyID)
	}
	defer s.observe("mark_delivered", time.Now())
	p, failed := s.mark(ctx, []MarkRequest{{clickID, postbackID, d, ftd}})
	if failed != nil {
		return nil, fmt.Errorf("dedupe: mark delivered: %w", failed.err)
	}
	return p[0], nil
}

// MarkRequest is one mark of MarkDeliveredBatch (see MarkDelivered).
type MarkRequest struct {
	ClickID    string
	PostbackID string
	Delivery   Delivery
	FTD        *FTDDelivered
}

// MarkDeliveredBatch marks many postbacks delivered in one pipelined round
// trip, each exactly as MarkDelivered; released qualifications come back in
// the order of reqs (nil where none). On error (naming the first failed
// mark, ErrNotFTD included) others may have been marked; calling it again
// is safe, and returns the released qualifications again.
func (s *Store) MarkDeliveredBatch(ctx context.Context, reqs []MarkRequest) ([]*Parked, error) {
	for i, r := range reqs {
		if r.ClickID == "" || r.PostbackID == "" || (r.FTD != nil && r.FTD.EventID == "") {
			return nil, fmt.Errorf("dedupe: mark delivered batch: mark %d: %w", i, ErrEmptyID)
		}
	}
	defer s.observe("mark_delivered_batch", time.Now())
	p, failed := s.mark(ctx, reqs)
	if failed != nil {
		return nil, fmt.Errorf("dedupe: mark delivered batch: mark %d (postback %s): %w", failed.i, reqs[failed.i].PostbackID, failed.err)
	}
	return p, nil
}

// markError is mark's failure: err, of request i.
type markError struct {
	i   int
	err error
}

// markPlain is the mark of a postback that is not the FTD, as plain
// commands: set records value under done; del, queued only once set has
// succeeded, drops the lease.
type markPlain struct {
	done, lease string
	value       []byte
	set         *redis.BoolCmd
	del         *redis.IntCmd
}

// mark runs reqs' marks: the FTDs' by markScript, the others' by plain
// commands, SET NX of the answer in the same round trip as the scripts and,
// in a second one, DEL of the lease of each answer recorded. The order is
// the point: Redis may refuse the SET and take the DEL (at maxmemory with
// noeviction it refuses commands that may grow memory and runs DEL), and a
// lease dropped without its answer recorded would let a claim send again.
// A lease whose DEL is lost expires on its own. It stops at the first
// request whose mark failed.
func (s *Store) mark(ctx context.Context, reqs []MarkRequest) ([]*Parked, *markError) {
	var calls []scriptCall // the FTDs' marks, in the order of reqs
	plain := make([]*markPlain, len(reqs))
	for i, r := range reqs {
		b, err := marshalDelivery(r.Delivery)
		if err != nil {
			return nil, &markError{i, err}
		}
		k := s.keysOf(r.ClickID)
		lease, done := k.claimKeys(r.PostbackID)
		if r.FTD != nil {
			calls = append(calls, scriptCall{[]string{lease, done, k.key("ftd"), k.key("parked")},
				[]any{b, s.ttlMS, r.FTD.EventID}})
		} else {
			plain[i] = &markPlain{done: done, lease: lease, value: b}
		}
	}
	queueSets := func(pipe redis.Pipeliner) {
		for _, p := range plain {
			if p != nil {
				p.set = pipe.SetNX(ctx, p.done, p.value, s.opts.RecordTTL)
			}
		}
	}
	cmds := s.runPipelinedWith(ctx, markScript, calls, queueSets)
	s.dropLeases(ctx, plain)
	out := make([]*Parked, len(reqs))
	next := 0 // the next of cmds: the FTDs' replies, in the order of reqs
	for i, p := range plain {
		var err error
		if p != nil {
			// A mark whose DEL failed is recorded all the same (its lease
			// then expires on its own); the error tells the caller to mark
			// again, which is safe.
			if err = p.set.Err(); err == nil {
				err = p.del.Err()
			}
		} else {
			var v any
			if v, err = cmds[next].Result(); err == nil {
				out[i], err = parseMark(v)
			}
			next++
		}
		if err != nil {
			return nil, &markError{i, err}
		}
	}
	return out, nil
}

// dropLeases deletes, in one round trip, the lease of each plain mark whose
// answer Redis recorded (or had recorded before: SET NX answered either
// way), setting its del.
func (s *Store) dropLeases(ctx context.Context, plain []*markPlain) {
	pipe := s.rdb.Pipeline()
	for _, p := range plain {
		if p != nil && p.set.Err() == nil {
			p.del = pipe.Del(ctx, p.lease)
		}
	}
	if pipe.Len() == 0 {
		return
	}
	defer s.observe("drop_leases", time.Now())
	_, _ = pipe.Exec(ctx) // errors are per command
}

// parseMark reads the reply of markScript and failFTDScript: {'ok'},
// {'notftd'} or {'taken', parked fields}.
func parseMark(v any) (*Parked, error) {
	a, err := asArray(v)
	if err != nil || len(a) == 0 {
		return nil, corruptf("unexpected reply %v", v)
	}
	switch state, _ := asString(a[0]); state {
	case "ok":
		return nil, nil
	case "notftd":
		return nil, ErrNotFTD
	case "taken":
		if len(a) == 2 {
			return parseParked(a[1])
		}
	}
	return nil, corruptf("unexpected reply %v", v)
}

// releaseScript: KEYS lease; ARGV token.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return {'ok'}
`)

// Release drops the lease if token still holds it (the failure path: the
// postback was not delivered and may be claimed again at once). A stale or
// wrong token is a no-op; safe to call twice.
func (s *Store) Release(ctx context.Context, clickID, postbackID, token string) error {
	if clickID == "" || postbackID == "" {
		return fmt.Errorf("dedupe: release: %w", ErrEmptyID)
	}
	defer s.observe("release", time.Now())
	if err := releaseScript.Run(ctx, s.rdb, []string{s.clickKey(clickID, "lease", postbackID)}, token).Err(); err != nil {
		return fmt.Errorf("dedupe: release: %w", err)
	}
	return nil
}

// marshalDelivery returns json.Marshal(d), byte for byte, without
// reflection: every postback's delivered mark stores one.
// TestMarshalDelivery and FuzzMarshalDelivery hold it to json.Marshal, and
// fail when Delivery gains a field this does not write.
func marshalDelivery(d Delivery) ([]byte, error) {
	// 128: the field names, the numbers, the time, and room for escapes (a
	// query's & is six bytes).
	b := make([]byte, 0, 128+len(d.URL)+len(d.Refused))
	b = append(b, `{"http_status":`...)
	b = strconv.AppendInt(b, int64(d.HTTPStatus), 10)
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(d.Attempts), 10)
	b = append(b, `,"delivered_at":`...)
	b, ok := jsonfast.AppendTime(b, d.DeliveredAt, true)
	if !ok {
		return json.Marshal(d) // a time json.Marshal refuses: its error
	}
	b = append(b, `,"url":`...)
	b = jsonfast.AppendString(b, d.URL)
	if d.Refused != "" {
		b = append(b, `,"refused":`...)
		b = jsonfast.AppendString(b, d.Refused)
	}
	return append(b, '}'), nil
}
