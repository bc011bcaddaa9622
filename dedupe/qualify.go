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
	// is parked until MarkDelivered(ftd) releases it or the wait window ends
	// (TakeOrphan).
	DecideWait
	// DecideConflict: the FTD (or a parked qualification) holds another
	// status; nothing changed.
	DecideConflict
)

func (d Decision) String() string {
	switch d {
	case DecideSend:
		return "send"
	case DecideWait:
		return "wait"
	case DecideConflict:
		return "conflict"
	}
	return "Decision(" + strconv.Itoa(int(d)) + ")"
}

// OrphanState is the outcome of TakeOrphan.
type OrphanState int

const (
	// OrphanTaken: the parked qualification was taken; its FTD never came
	// (dead-letter it).
	OrphanTaken OrphanState = iota + 1
	// OrphanFTDPending: the FTD exists but is not delivered yet; the
	// qualification stays parked (extend the wait).
	OrphanFTDPending
	// OrphanGone: nothing parked under that event id: it was released with
	// its FTD, taken before, or another event of the same status holds the
	// parking place.
	OrphanGone
)

func (o OrphanState) String() string {
	switch o {
	case OrphanTaken:
		return "taken"
	case OrphanFTDPending:
		return "ftd_pending"
	case OrphanGone:
		return "gone"
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
	// with a parked qualification of the same status already there (the
	// first one is kept).
	Repeated bool
}

// Parked is a qualification waiting for its FTD.
type Parked struct {
	EventID  string
	Status   string
	Payload  []byte
	ParkedAt time.Time
}

// qualifyScript: KEYS ftd, parked; ARGV event_id, status, payload, at,
// ttl_ms. Returns {decision, repeated, existing_status, ftd fields}.
//
// Invariant kept by the scripts: a status is recorded on the FTD record only
// once it is delivered, and nothing is parked once it is delivered.
var qualifyScript = redis.NewScript(luaPrelude + `
local rec = ftd(KEYS[1])
if rec[1] ~= '' and rec[6] ~= '' then
  if rec[6] ~= ARGV[2] then return {'conflict', '0', rec[6], rec} end
  return {'send', '1', '', rec}
end
if rec[1] ~= '' and rec[5] == '1' then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'status_event_id', ARGV[1])
  return {'send', '0', '', ftd(KEYS[1])}
end
local p = parked(KEYS[2])
if p[1] ~= '' then
  if p[2] ~= ARGV[2] then return {'conflict', '0', p[2], rec} end
  return {'wait', '1', '', rec}
end
redis.call('HSET', KEYS[2], 'event_id', ARGV[1], 'status', ARGV[2], 'payload', ARGV[3], 'parked_at', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {'wait', '0', '', rec}
`)

// Qualify decides a status change against the click's FTD record, in one
// atomic round trip (see Decision). Safe to call twice: a repeat returns the
// same decision with Repeated set and changes nothing. A parked
// qualification lives for RecordTTL at most; the caller's wait window
// (TakeOrphan) must be shorter.
func (s *Store) Qualify(ctx context.Context, q Qualification) (QualifyResult, error) {
	if q.ClickID == "" || q.EventID == "" || q.Status == "" {
		return QualifyResult{}, fmt.Errorf("dedupe: qualify: %w", ErrEmptyID)
	}
	defer s.observe("qualify", time.Now())
	v, err := qualifyScript.Run(ctx, s.rdb,
		[]string{s.clickKey(q.ClickID, "ftd"), s.clickKey(q.ClickID, "parked")},
		q.EventID, q.Status, q.Payload, formatTime(q.At), s.ttlMS).Result()
	if err != nil {
		return QualifyResult{}, fmt.Errorf("dedupe: qualify: %w", err)
	}
	a, err := asArray(v)
	if err != nil || len(a) != 4 {
		return QualifyResult{}, fmt.Errorf("dedupe: qualify: unexpected reply %v", v)
	}
	f, err := asStrings(a[:3])
	if err != nil {
		return QualifyResult{}, fmt.Errorf("dedupe: qualify: %w", err)
	}
	rec, err := parseFTD(a[3])
	if err != nil {
		return QualifyResult{}, fmt.Errorf("dedupe: qualify: %w", err)
	}
	r := QualifyResult{FTD: rec, FTDExists: rec.Exists(), ExistingStatus: f[2], Repeated: f[1] == "1"}
	switch f[0] {
	case "send":
		r.Decision = DecideSend
	case "wait":
		r.Decision = DecideWait
	case "conflict":
		r.Decision = DecideConflict
	default:
		return QualifyResult{}, fmt.Errorf("dedupe: qualify: unexpected decision %q", f[0])
	}
	return r, nil
}

// takeOrphanScript: KEYS ftd, parked; ARGV event_id.
var takeOrphanScript = redis.NewScript(luaPrelude + `
local p = parked(KEYS[2])
if p[1] == '' or p[1] ~= ARGV[1] or p[5] == '1' then return {'gone'} end
local rec = ftd(KEYS[1])
if rec[1] ~= '' and rec[5] ~= '1' then return {'pending'} end
redis.call('DEL', KEYS[2])
return {'taken', p}
`)

// TakeOrphan is called when a parked qualification's wait window ends. It
// takes the qualification parked under eventID unless its FTD exists and is
// still undelivered (OrphanFTDPending: extend the wait). With the scripts'
// invariant, a taken orphan means the FTD never arrived. Safe to call twice:
// the second call reports OrphanGone.
func (s *Store) TakeOrphan(ctx context.Context, clickID, eventID string) (*Parked, OrphanState, error) {
	if clickID == "" || eventID == "" {
		return nil, 0, fmt.Errorf("dedupe: take orphan: %w", ErrEmptyID)
	}
	defer s.observe("take_orphan", time.Now())
	v, err := takeOrphanScript.Run(ctx, s.rdb,
		[]string{s.clickKey(clickID, "ftd"), s.clickKey(clickID, "parked")}, eventID).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("dedupe: take orphan: %w", err)
	}
	a, err := asArray(v)
	if err != nil || len(a) == 0 {
		return nil, 0, fmt.Errorf("dedupe: take orphan: unexpected reply %v", v)
	}
	switch state, _ := asString(a[0]); state {
	case "gone":
		return nil, OrphanGone, nil
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
	return nil, 0, fmt.Errorf("dedupe: take orphan: unexpected reply %v", v)
}

// takeParkedScript: KEYS parked.
var takeParkedScript = redis.NewScript(luaPrelude + `
local p = parked(KEYS[1])
if p[1] == '' or p[5] == '1' then return {} end
redis.call('DEL', KEYS[1])
return p
`)

// TakeParked takes (deletes and returns) the click's parked qualification
// whatever the FTD's state: used when the FTD was dead-lettered and will
// never be delivered. Nil when nothing is parked; safe to call twice.
func (s *Store) TakeParked(ctx context.Context, clickID string) (*Parked, error) {
	if clickID == "" {
		return nil, fmt.Errorf("dedupe: take parked: %w", ErrEmptyID)
	}
	defer s.observe("take_parked", time.Now())
	v, err := takeParkedScript.Run(ctx, s.rdb, []string{s.clickKey(clickID, "parked")}).Result()
	if err != nil {
		return nil, fmt.Errorf("dedupe: take parked: %w", err)
	}
	if a, ok := v.([]any); ok && len(a) == 0 {
		return nil, nil
	}
	p, err := parseParked(v)
	if err != nil {
		return nil, fmt.Errorf("dedupe: take parked: %w", err)
	}
	return p, nil
}

func parseParked(v any) (*Parked, error) {
	f, err := asStrings(v)
	if err != nil || len(f) != 5 {
		return nil, fmt.Errorf("unexpected parked record %v", v)
	}
	at, err := parseTime(f[3])
	if err != nil {
		return nil, fmt.Errorf("parked_at: %w", err)
	}
	return &Parked{EventID: f[0], Status: f[1], Payload: []byte(f[2]), ParkedAt: at}, nil
}
