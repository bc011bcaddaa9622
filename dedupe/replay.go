package dedupe

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ReplayPrep is what PrepareReplay found of a dead-lettered postback.
type ReplayPrep string

const (
	// ReplayCleared: its refusal was forgotten; it is sent when its event
	// comes again.
	ReplayCleared ReplayPrep = "cleared"
	// ReplayDelivered: it was delivered since it was dead-lettered; it must
	// not be replayed.
	ReplayDelivered ReplayPrep = "delivered"
	// ReplayUnmarked: no final outcome is stored (it expired, or was never
	// written); it is sent when its event comes again.
	ReplayUnmarked ReplayPrep = "unmarked"
)

// prepareReplayScript: KEYS done, ftd; ARGV ftd event id ("" not an FTD).
var prepareReplayScript = redis.NewScript(luaPrelude + `
local d = redis.call('GET', KEYS[1])
local out = 'unmarked'
if d then
  local ok, v = pcall(cjson.decode, d)
  if not (ok and type(v) == 'table' and type(v.refused) == 'string' and v.refused ~= '') then
    return {'delivered'}
  end
  redis.call('DEL', KEYS[1])
  out = 'cleared'
end
if ARGV[1] ~= '' then
  local rec = ftd(KEYS[2])
  if rec[1] == ARGV[1] and rec[5] ~= '1' and rec[8] ~= '' then
    redis.call('HDEL', KEYS[2], 'failed')
  end
end
return {out}
`)

// PrepareReplay makes a dead-lettered postback sendable again: it forgets
// its refusal (a final outcome with Delivery.Refused) and, when the postback
// was the click's FTD (ftdEventID, "" otherwise), the FTD record's failure,
// so that a qualification replayed beside it waits for the FTD instead of
// being dead-lettered again. A postback delivered since is left alone
// (ReplayDelivered). Safe to call twice.
func (s *Store) PrepareReplay(ctx context.Context, clickID, postbackID, ftdEventID string) (ReplayPrep, error) {
	if clickID == "" || postbackID == "" {
		return "", fmt.Errorf("dedupe: prepare replay: %w", ErrEmptyID)
	}
	v, err := prepareReplayScript.Run(ctx, s.rdb,
		[]string{s.clickKey(clickID, "done", postbackID), s.clickKey(clickID, "ftd")}, ftdEventID).Result()
	if err != nil {
		return "", fmt.Errorf("dedupe: prepare replay: %w", err)
	}
	a, err := asStrings(v)
	if err != nil || len(a) != 1 {
		return "", corruptf("dedupe: prepare replay: unexpected reply %v", v)
	}
	return ReplayPrep(a[0]), nil
}

// MarkReplayed records, for RecordTTL, that the dead letter id (its DLQ
// coordinates) was replayed at at. The first record is kept.
func (s *Store) MarkReplayed(ctx context.Context, id string, at time.Time) error {
	if id == "" {
		return fmt.Errorf("dedupe: mark replayed: %w", ErrEmptyID)
	}
	if err := s.rdb.SetNX(ctx, s.replayedKey(id), formatTime(at), s.opts.RecordTTL).Err(); err != nil {
		return fmt.Errorf("dedupe: mark replayed: %w", err)
	}
	return nil
}

// Replayed says when the dead letter id was replayed (MarkReplayed), and
// false when it was not (or it was longer than RecordTTL ago).
func (s *Store) Replayed(ctx context.Context, id string) (time.Time, bool, error) {
	v, err := s.rdb.Get(ctx, s.replayedKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("dedupe: replayed: %w", err)
	}
	at, _ := parseTime(v)
	return at, true, nil
}

func (s *Store) replayedKey(id string) string { return s.opts.Prefix + ":replayed:" + id }
