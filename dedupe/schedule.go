package dedupe

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Job is a delayed-schedule entry as returned by TakeDue.
type Job struct {
	ID string
	// Due is the time the job was scheduled for (not its lease).
	Due     time.Time
	Payload []byte
}

// scheduleScript: KEYS due, jobs; ARGV id, due_ms, value ("<due_ms>|payload").
var scheduleScript = redis.NewScript(`
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return {'ok'}
`)

// takeDueScript: KEYS due, jobs; ARGV now_ms, lease_until_ms, limit.
// Returns {id, value, id, value, ...}. An index entry without a job (it
// cannot arise from these scripts, but a partial manual cleanup could leave
// one) is dropped rather than returned forever.
var takeDueScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', '0', ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('HGET', KEYS[2], id)
  if v then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    out[#out + 1] = id
    out[#out + 1] = v
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
`)

// ackScript: KEYS due, jobs; ARGV id.
var ackScript = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return {'ok'}
`)

func (s *Store) shardOf(jobID string) int {
	h := fnv.New32a()
	h.Write([]byte(jobID))
	return int(h.Sum32() % uint32(s.opts.Shards))
}

// Schedule stores a job to be taken at due. Idempotent by id: scheduling an
// existing id replaces its due time and payload (this is also how a taker
// reschedules a job it could not finish). Jobs never expire; Ack removes
// them.
func (s *Store) Schedule(ctx context.Context, jobID string, due time.Time, payload []byte) error {
	if jobID == "" {
		return fmt.Errorf("dedupe: schedule: %w", ErrEmptyID)
	}
	defer s.observe("schedule", time.Now())
	keys, args := s.scheduleCall(ScheduledJob{ID: jobID, Due: due, Payload: payload})
	if err := scheduleScript.Run(ctx, s.rdb, keys, args...).Err(); err != nil {
		return fmt.Errorf("dedupe: schedule: %w", err)
	}
	return nil
}

// ScheduledJob is one job to store with ScheduleBatch.
type ScheduledJob struct {
	ID      string
	Due     time.Time
	Payload []byte
}

// ScheduleBatch stores many jobs in one pipelined round trip, each exactly
// as Schedule does (idempotent by id). On error (naming the first job that
// failed) some may have been stored; calling it again is safe.
func (s *Store) ScheduleBatch(ctx context.Context, jobs []ScheduledJob) ([]struct{}, error) {
	calls := make([]scriptCall, len(jobs))
	for i, j := range jobs {
		if j.ID == "" {
			return nil, fmt.Errorf("dedupe: schedule batch: job %d: %w", i, ErrEmptyID)
		}
		calls[i].keys, calls[i].args = s.scheduleCall(j)
	}
	return runBatch(ctx, s, "schedule_batch", "schedule batch", scheduleScript, calls, ignoreReply,
		func(i int) string { return fmt.Sprintf("job %d (%s)", i, jobs[i].ID) })
}

func (s *Store) scheduleCall(j ScheduledJob) ([]string, []any) {
	dueMS := strconv.FormatInt(j.Due.UnixMilli(), 10)
	val := make([]byte, 0, len(dueMS)+1+len(j.Payload))
	val = append(append(append(val, dueMS...), '|'), j.Payload...)
	return s.shardKeys(s.shardOf(j.ID)), []any{j.ID, dueMS, val}
}

// TakeDue returns up to max jobs due at now, oldest first within a shard,
// and in the same script per shard moves each one's due score to now+lease:
// a taker that crashes before Ack or Schedule loses nothing, the job is
// taken again after the lease. A job may thus be handed out twice (lease
// expiry); its processing must be idempotent (the postback claim is).
//
// Shards are visited from an offset that rotates with every call. When max
// is at least Shards, the budget is spread over all shards and the per-shard
// scripts go in one pipelined round trip; an empty result then means
// nothing is due. When max is smaller, one pipelined ZCOUNT round trip first
// finds the shards with due jobs so max is honoured without starving any.
// Fewer than max jobs does not mean the schedule is drained (a busy shard
// may have used its share); callers poll again until a result is empty.
func (s *Store) TakeDue(ctx context.Context, now time.Time, lease time.Duration, max int) ([]Job, error) {
	if max <= 0 {
		return nil, nil
	}
	defer s.observe("take_due", time.Now())
	n := s.opts.Shards
	start := int(s.rotate.Add(1) % uint32(n))
	order := make([]int, n)
	for i := range order {
		order[i] = (start + i) % n
	}
	nowMS := strconv.FormatInt(now.UnixMilli(), 10)
	avail := make([]int64, n)
	for i := range avail {
		avail[i] = int64(max) // unknown: as many as asked
	}
	if max < n {
		pipe := s.rdb.Pipeline()
		counts := make([]*redis.IntCmd, n)
		for i := range counts {
			counts[i] = pipe.ZCount(ctx, s.shardKeys(i)[0], "-inf", nowMS)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("dedupe: take due: count: %w", err)
		}
		for i, c := range counts {
			avail[i] = c.Val()
		}
	}
	limits := allot(max, order, avail)

	untilMS := strconv.FormatInt(now.Add(lease).UnixMilli(), 10)
	var shards []int
	var calls []scriptCall
	for _, sh := range order {
		if limits[sh] > 0 {
			shards = append(shards, sh)
			calls = append(calls, scriptCall{s.shardKeys(sh), []any{nowMS, untilMS, limits[sh]}})
		}
	}
	if len(calls) == 0 {
		return nil, nil
	}
	cmds := s.runPipelined(ctx, takeDueScript, calls)
	var jobs []Job
	for i, c := range cmds {
		if err := c.Err(); err != nil {
			// Jobs leased by shards that did answer reappear after the lease.
			return nil, fmt.Errorf("dedupe: take due: shard %d: %w", shards[i], err)
		}
		f, err := asStrings(c.Val())
		if err != nil || len(f)%2 != 0 {
			return nil, fmt.Errorf("dedupe: take due: shard %d: unexpected reply %v", shards[i], c.Val())
		}
		for i := 0; i < len(f); i += 2 {
			j, err := parseJob(f[i], f[i+1])
			if err != nil {
				return nil, fmt.Errorf("dedupe: take due: job %q: %w", f[i], err)
			}
			jobs = append(jobs, j)
		}
	}
	return jobs, nil
}

// allot spreads budget over shards in the given order, one at a time, never
// giving a shard more than avail.
func allot(budget int, order []int, avail []int64) []int64 {
	limits := make([]int64, len(avail))
	for budget > 0 {
		gave := false
		for _, sh := range order {
			if budget == 0 {
				break
			}
			if limits[sh] < avail[sh] {
				limits[sh]++
				budget--
				gave = true
			}
		}
		if !gave {
			break
		}
	}
	return limits
}

func parseJob(id, val string) (Job, error) {
	dueMS, payload, ok := strings.Cut(val, "|")
	if !ok {
		return Job{}, fmt.Errorf("malformed value")
	}
	ms, err := strconv.ParseInt(dueMS, 10, 64)
	if err != nil {
		return Job{}, fmt.Errorf("due: %w", err)
	}
	return Job{ID: id, Due: time.UnixMilli(ms), Payload: []byte(payload)}, nil
}

// Ack removes a job. Safe to call twice and for unknown ids.
func (s *Store) Ack(ctx context.Context, jobID string) error {
	if jobID == "" {
		return fmt.Errorf("dedupe: ack: %w", ErrEmptyID)
	}
	defer s.observe("ack", time.Now())
	if err := ackScript.Run(ctx, s.rdb, s.shardKeys(s.shardOf(jobID)), jobID).Err(); err != nil {
		return fmt.Errorf("dedupe: ack: %w", err)
	}
	return nil
}

// Len is the number of scheduled jobs (leased ones included), summed over
// shards in one pipelined round trip; for metrics and tests.
func (s *Store) Len(ctx context.Context) (int64, error) {
	defer s.observe("len", time.Now())
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, s.opts.Shards)
	for i := range cmds {
		cmds[i] = pipe.ZCard(ctx, s.shardKeys(i)[0])
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("dedupe: len: %w", err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}
