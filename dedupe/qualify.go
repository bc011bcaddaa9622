package dedupe

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Decision is the outcome of Qualify.
type Decision int

const (
	// DecideSend: the FTD was delivered and holds this status; send the
	// status change for QualifyResult.FTD.
	DecideSend Decision = iota + 1
	// DecideWait: the FTD is missing or not yet delivered; the qualification
	// is parked until MarkDelivered(ftd) releases it, FailFTD dead-letters
	// it, or the wait window ends (TakeOrphan).
	DecideWait
	// DecideConflict: the FTD (or a parked qualification) holds another
	// status; nothing changed.
	DecideConflict
	// DecideFTDFailed: the FTD was given up on (FailFTD; QualifyResult.FTD.
	// Failure says why) and will never be delivered, so no status change can
	// follow; nothing was parked. Dead-letter the qualification.
	DecideFTDFailed
)

func (d Decision) String() string {
	switch d {
	case DecideSend:
		return "send"
	case DecideWait:
		return "wait"
	case DecideConflict:
		return "conflict"
	case DecideFTDFailed:
		return "ftd_failed"
	}
	return "Decision(" + strconv.Itoa(int(d)) + ")"
}

// OrphanState is the outcome of TakeOrphan.
type OrphanState int

const (
	// OrphanTaken: the parked qualification was dead-lettered as an orphan
	// (now, or by an earlier call: a repeat returns it again); its FTD never
	// came, or failed. Dead-letter it.
	OrphanTaken OrphanState = iota + 1
	// OrphanFTDPending: the FTD exists but is not delivered (nor failed)
	// yet; the qualification stays parked (extend the wait).
	OrphanFTDPending
	// OrphanGone: the qualification is no longer parked: it was released
	// with its FTD, or dead-lettered with a failed FTD (FailFTD).
	OrphanGone
	// OrphanLapsed: nothing at all is stored of that parked qualification:
	// its record expired (RecordTTL shorter than the wait, which
	// configuration validation refuses) or Redis lost it. Its outcome is
	// unknown to Redis; the caller dead-letters it from its own copy.
	OrphanLapsed
)

func (o OrphanState) String() string {
	switch o {
	case OrphanTaken:
		return "taken"
	case OrphanFTDPending:
		return "ftd_pending"
	case OrphanGone:
		return "gone"
	case OrphanLapsed:
		return "lapsed"
	}
	return "OrphanState(" + strconv.Itoa(int(o)) + ")"
}

// Qualification is an FTD status change to decide.
type Qualification struct {
	ClickID string
	EventID string
	Status  string
	// Payload is opaque to the store: what the caller needs to resume the
	// qualification after it was parked.
	Payload []byte
	At      time.Time
}

// QualifyResult is the answer of Qualify.
type QualifyResult struct {
	Decision Decision
	// FTD is the click's FTD record (zero when FTDExists is false).
	FTD       FTDRecord
	FTDExists bool
	// ExistingStatus is the status that conflicts (DecideConflict only).
	ExistingStatus string
	// Repeated: DecideSend with the status already recorded, or DecideWait
	// with a qualification of the same status already parked (the first one
	// is kept: ParkedEventID tells whether that is this event itself).
	Repeated bool
	// ParkedEventID and ParkedAt describe the qualification waiting for the
	// FTD: on DecideWait the one parked (this event, or the first one when
	// Repeated), on DecideConflict with a parked qualification that one;
	// otherwise empty. A redelivery of the parked event itself is
	// DecideWait, Repeated, with ParkedEventID equal to its own event id.
	ParkedEventID string
	ParkedAt      time.Time
}

// Parked is a qualification waiting for its FTD.
type Parked struct {
	EventID  string
	Status   string
	Payload  []byte
	ParkedAt time.Time
}

// qualifyScript: KEYS ftd, parked, orphan (of this event); ARGV event_id,
// status, payload, at, ttl_ms. Returns {decision, repeated, existing_status,
// ftd fields, parked_event_id, parked_at}.
//
// Invariant kept by the scripts: a status is recorded on the FTD record only
// once it is delivered; nothing waits (parked, unreleased) once it is
// delivered or failed. A delivered FTD wins over a failed one. Only a
// waiting record holds the parking place: a released or dead-lettered one
// left there (it cannot be, by the invariant, unless records were edited by
// hand) is replaced.
var qualifyScript = redis.NewScript(luaPrelude + `
local rec = ftd(KEYS[1])
if rec[1] ~= '' and rec[6] ~= '' then
  if rec[6] ~= ARGV[2] then return {'conflict', '0', rec[6], rec, '', ''} end
  return {'send', '1', '', rec, '', ''}
end
if rec[1] ~= '' and rec[5] == '1' then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'status_event_id', ARGV[1])
  return {'send', '0', '', ftd(KEYS[1]), '', ''}
end
if rec[1] ~= '' and rec[8] ~= '' then return {'ftdfailed', '0', '', rec, '', ''} end
local p = parked(KEYS[2])
if p[1] ~= '' and p[5] == '' then
  if p[2] ~= ARGV[2] then return {'conflict', '0', p[2], rec, p[1], p[4]} end
  return {'wait', '1', '', rec, p[1], p[4]}
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], 'event_id', ARGV[1], 'status', ARGV[2], 'payload', ARGV[3], 'parked_at', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {'wait', '0', '', rec, ARGV[1], ARGV[4]}
`)

// Qualify decides a status change against the click's FTD record, in one
// atomic round trip (see Decision). Safe to call twice: a repeat returns the
// same decision (with Repeated set for DecideSend and DecideWait) and
// changes nothing. A parked qualification lives for RecordTTL at most; the
// caller's wait window (TakeOrphan) must be shorter. Parking an event that
// was dead-lettered as an orphan before (a late redelivery) makes it wait
// again: its orphan record is dropped, so TakeOrphan judges the new wait.
func (s *Store) Qualify(ctx context.Context, q Qualification) (QualifyResult, error) {
	if q.ClickID == "" || q.EventID == "" || q.Status == "" {
		return QualifyResult{}, fmt.Errorf("dedupe: qualify: %w", ErrEmptyID)
	}
	defer s.observe("qualify", time.Now())
	keys, args := s.qualifyCall(q)
	v, err := qualifyScript.Run(ctx, s.rdb, keys, args...).Result()
	if err != nil {
		return QualifyResult{}, fmt.Errorf("dedupe: qualify: %w", err)
	}
	r, err := parseQualify(v)
	if err != nil {
		return QualifyResult{}, fmt.Errorf("dedupe: qualify: %w", err)
	}
	return r, nil
}

// QualifyBatch decides many qualifications in one pipelined round trip;
// each is its own atomic script, exactly as Qualify. The results are in the
// order of qs. On error (naming the first failed qualification) some may
// have been decided; calling it again is safe, as Qualify is.
func (s *Store) QualifyBatch(ctx context.Context, qs []Qualification) ([]QualifyResult, error) {
	calls := make([]scriptCall, len(qs))
	for i, q := range qs {
		if q.ClickID == "" || q.EventID == "" || q.Status == "" {
			return nil, fmt.Errorf("dedupe: qualify batch: qualification %d: %w", i, ErrEmptyID)
		}
		calls[i].keys, calls[i].args = s.qualifyCall(q)
	}
	return runBatch(ctx, s, "qualify_batch", "qualify batch", qualifyScript, calls,
		func(_ int, v any) (QualifyResult, error) { return parseQualify(v) },
		func(i int) string { return fmt.Sprintf("qualification %d (event %s)", i, qs[i].EventID) })
}

func (s *Store) qualifyCall(q Qualification) ([]string, []any) {
	k := s.keysOf(q.ClickID)
	return []string{k.key("ftd"), k.key("parked"), k.key("orphan", q.EventID)},
		[]any{q.EventID, q.Status, q.Payload, formatTime(q.At), s.ttlMS}
}

func parseQualify(v any) (QualifyResult, error) {
	a, err := asArray(v)
	if err != nil || len(a) != 6 {
		return QualifyResult{}, corruptf("unexpected qualify reply %v", v)
	}
	f, err := asStrings(append(a[:3:3], a[4:]...))
	if err != nil {
		return QualifyResult{}, err
	}
	rec, err := parseFTD(a[3])
	if err != nil {
		return QualifyResult{}, err
	}
	parkedAt, err := parseTime(f[4])
	if err != nil {
		return QualifyResult{}, corruptf("parked_at: %w", err)
	}
	r := QualifyResult{
		FTD: rec, FTDExists: rec.Exists(), ExistingStatus: f[2], Repeated: f[1] == "1",
		ParkedEventID: f[3], ParkedAt: parkedAt,
	}
	switch f[0] {
	case "send":
		r.Decision = DecideSend
	case "wait":
		r.Decision = DecideWait
	case "conflict":
		r.Decision = DecideConflict
	case "ftdfailed":
		r.Decision = DecideFTDFailed
	default:
		return QualifyResult{}, corruptf("unexpected qualify decision %q", f[0])
	}
	return r, nil
}

// takeOrphanScript: KEYS ftd, parked, orphan (of this event); ARGV event_id.
//
// Taking moves the parked record to the event's orphan key (RENAME keeps
// its TTL) marked dead-lettered, instead of deleting it: a repeat finds it
// there and returns it again, and the parking place is free for a later
// qualification of the click, as it was before the orphan.
var takeOrphanScript = redis.NewScript(luaPrelude + `
local o = parked(KEYS[3])
if o[1] ~= '' then return {'taken', o} end
local p = parked(KEYS[2])
if p[1] == '' or p[1] ~= ARGV[1] then return {'lapsed'} end
if p[5] ~= '' then return {'gone'} end
local rec = ftd(KEYS[1])
if rec[1] ~= '' and rec[5] ~= '1' and rec[8] == '' then return {'pending'} end
redis.call('HSET', KEYS[2], 'released', '2')
redis.call('RENAME', KEYS[2], KEYS[3])
return {'taken', p}
`)

// TakeOrphan is called when a parked qualification's wait window ends. It
// dead-letters the qualification parked under eventID unless its FTD exists
// and is still undelivered and not failed (OrphanFTDPending: extend the
// wait); a failed FTD counts as no FTD. With the scripts' invariant, a taken
// orphan means the FTD never arrived. Idempotent rather than a delete: the
// dead-lettered record stays (for what was left of its RecordTTL) and a
// repeated call returns it again (OrphanTaken), so a crash or a failed
// output write before its dead letter was written does not lose it: the
// retry writes it again (at least once). A qualification dead-lettered by
// FailFTD or released by MarkDelivered is OrphanGone; one of which nothing
// is stored (neither parked under eventID nor an orphan) is OrphanLapsed.
func (s *Store) TakeOrphan(ctx context.Context, clickID, eventID string) (*Parked, OrphanState, error) {
	if clickID == "" || eventID == "" {
		return nil, 0, fmt.Errorf("dedupe: take orphan: %w", ErrEmptyID)
	}
	defer s.observe("take_orphan", time.Now())
	v, err := takeOrphanScript.Run(ctx, s.rdb,
		[]string{s.clickKey(clickID, "ftd"), s.clickKey(clickID, "parked"), s.clickKey(clickID, "orphan", eventID)},
		eventID).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("dedupe: take orphan: %w", err)
	}
	a, err := asArray(v)
	if err != nil || len(a) == 0 {
		return nil, 0, corruptf("dedupe: take orphan: unexpected reply %v", v)
	}
	switch state, _ := asString(a[0]); state {
	case "gone":
		return nil, OrphanGone, nil
	case "lapsed":
		return nil, OrphanLapsed, nil
	case "pending":
		return nil, OrphanFTDPending, nil
	case "taken":
		if len(a) == 2 {
			p, err := parseParked(a[1])
			if err != nil {
				return nil, 0, fmt.Errorf("dedupe: take orphan: %w", err)
			}
			return p, OrphanTaken, nil
		}
	}
	return nil, 0, corruptf("dedupe: take orphan: unexpected reply %v", v)
}

// failFTDScript: KEYS ftd, parked; ARGV ftd_event_id, reason. Returns
// {'notftd'}, {'ok'} or {'taken', parked fields}.
var failFTDScript = redis.NewScript(luaPrelude + `
local rec = ftd(KEYS[1])
if rec[1] == '' or rec[1] ~= ARGV[1] then return {'notftd'} end
if rec[5] == '1' then return {'ok'} end
if rec[8] == '' then redis.call('HSET', KEYS[1], 'failed', ARGV[2]) end
local p = parked(KEYS[2])
if p[1] == '' or p[5] == '1' then return {'ok'} end
if p[5] == '' then redis.call('HSET', KEYS[2], 'released', '2') end
return {'taken', p}
`)

// FailFTD records that the click's FTD postback (deposit ftdEventID) will
// never be delivered (refused, too old, or its partner has no ftd goal), and
// dead-letters the qualification waiting for it, if any, returning it: its
// status change can never be sent. Both in one script, so no qualification
// parks in between. From then on Qualify answers DecideFTDFailed (nothing
// is parked) and the FTD record's Failure holds reason (the first one
// recorded is kept). Like MarkDelivered's release, dead-lettering is a mark,
// not a delete: the record stays (for what is left of its RecordTTL) and a
// repeated FailFTD returns it again, so a crash or a failed output write
// before its dead letter was written does not lose it (written at least
// once). A dead-lettered qualification is never released by a later
// MarkDelivered(ftd) and is OrphanGone for TakeOrphan.
//
// A delivered FTD is not failed (a delivery is a fact): FailFTD then
// changes nothing and returns nil. ErrNotFTD if ftdEventID is not the
// click's FTD (then nothing is written).
func (s *Store) FailFTD(ctx context.Context, clickID, ftdEventID, reason string) (*Parked, error) {
	if clickID == "" || ftdEventID == "" || reason == "" {
		return nil, fmt.Errorf("dedupe: fail ftd: %w", ErrEmptyID)
	}
	defer s.observe("fail_ftd", time.Now())
	v, err := failFTDScript.Run(ctx, s.rdb,
		[]string{s.clickKey(clickID, "ftd"), s.clickKey(clickID, "parked")}, ftdEventID, reason).Result()
	if err != nil {
		return nil, fmt.Errorf("dedupe: fail ftd: %w", err)
	}
	p, err := parseMark(v)
	if err != nil {
		return nil, fmt.Errorf("dedupe: fail ftd: %w", err)
	}
	return p, nil
}

func parseParked(v any) (*Parked, error) {
	f, err := asStrings(v)
	if err != nil || len(f) != 5 {
		return nil, corruptf("unexpected parked record %v", v)
	}
	at, err := parseTime(f[3])
	if err != nil {
		return nil, corruptf("parked_at: %w", err)
	}
	return &Parked{EventID: f[0], Status: f[1], Payload: []byte(f[2]), ParkedAt: at}, nil
}
