package dedupe

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/metrics"
)

// Errors callers must tell apart. Everything else is a Redis or decoding
// error, wrapped with the operation's name.
var (
	// ErrEmptyID: a click, event, postback or job id (or FailFTD's reason)
	// was empty. Empty ids would make distinct records collide, and an empty
	// reason would read as "not failed", so they are refused before any
	// Redis call.
	ErrEmptyID = errors.New("dedupe: empty id")
	// ErrCorrupt: what Redis holds (or answered) cannot be read: a record of
	// the wrong shape or type, edited by hand or written by another program.
	// Retrying cannot help; see IsCorrupt.
	ErrCorrupt = errors.New("dedupe: stored state cannot be read")
	// ErrNotFTD: MarkDelivered or FailFTD was told the postback was the
	// click's FTD, but the click's FTD record has another event id (or
	// none). The FTD record is untouched; MarkDelivered records the delivery
	// all the same (it happened), FailFTD writes nothing.
	ErrNotFTD = errors.New("dedupe: not the click's FTD")
)

// Defaults applied by New to zero Options fields.
const (
	DefaultPrefix    = "pb"
	DefaultRecordTTL = 7 * 24 * time.Hour
	DefaultShards    = 16
)

// Options configure a Store. Zero fields take the defaults above.
type Options struct {
	// Prefix namespaces every key. It must not contain '{' or '}' (it sits
	// outside, or as the start of, a Cluster hash tag).
	Prefix string
	// RecordTTL is the lifetime of classification answers, claims (their
	// delivered marks), click contexts and parked qualifications. FTD
	// records never expire. It must exceed the longest time an event can be
	// redelivered or retried (partner maximum age plus qualification wait
	// window), or a late redelivery meets a forgotten answer.
	RecordTTL time.Duration
	// Shards is the number of delayed-schedule shards. It must not change
	// while jobs are scheduled: a job's shard is hash(id) % Shards.
	Shards int
	// Metrics, when set, observes RedisSeconds{op} for every operation.
	Metrics *metrics.Metrics
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.RecordTTL == 0 {
		o.RecordTTL = DefaultRecordTTL
	}
	if o.Shards == 0 {
		o.Shards = DefaultShards
	}
	return o
}

// Validate reports every problem of o (after defaults) at once.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	if strings.ContainsAny(o.Prefix, "{}") {
		errs = append(errs, fmt.Errorf("dedupe.prefix %q: must not contain '{' or '}'", o.Prefix))
	}
	if o.RecordTTL < time.Millisecond {
		errs = append(errs, fmt.Errorf("dedupe.record_ttl %s: must be at least 1ms", o.RecordTTL))
	}
	if o.Shards < 1 {
		errs = append(errs, fmt.Errorf("dedupe.shards %d: must be at least 1", o.Shards))
	}
	return errors.Join(errs...)
}

// Store is postbackd's Redis state. It is safe for concurrent use; all its
// state is in Redis, so any number of Stores (processes) may share one Redis.
type Store struct {
	rdb    redis.UniversalClient
	opts   Options
	ttlMS  string // RecordTTL in milliseconds, as a script argument
	rotate atomic.Uint32
}

// New returns a Store on client. Options come from validated configuration,
// so New panics if opts.Validate fails: that is a programming error.
func New(client redis.UniversalClient, opts Options) *Store {
	if err := opts.Validate(); err != nil {
		panic(err)
	}
	opts = opts.withDefaults()
	return &Store{
		rdb:   client,
		opts:  opts,
		ttlMS: strconv.FormatInt(opts.RecordTTL.Milliseconds(), 10),
	}
}

// Ping checks that Redis answers; use it for readiness.
func (s *Store) Ping(ctx context.Context) error {
	defer s.observe("ping", time.Now())
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("dedupe: ping: %w", err)
	}
	return nil
}

// ---- keys ----

// clickTag is the Cluster hash tag of every key of one click. A click id
// without braces is used raw ("c:" + id) so keys stay readable, and the
// first '}' of a key then ends the id unambiguously. A raw id with braces
// would break that: Redis would hash only up to its first '}' (ids sharing a
// prefix would pile onto one slot) and keys could collide (click "a", event
// "e}:ftd" vs click "a}:ans:e"). Such an id is replaced by its SHA-1
// ("h:" + hex); the markers c: and h: keep the two forms apart.
func clickTag(clickID string) string {
	if strings.ContainsAny(clickID, "{}") {
		sum := sha1.Sum([]byte(clickID))
		return "{h:" + hex.EncodeToString(sum[:]) + "}"
	}
	return "{c:" + clickID + "}"
}

// clickKey builds "<prefix>:{c:<click>}:<kind>[:<id>]". The variable id is
// always last, after a fixed kind, so distinct (kind, id) pairs never give
// the same key.
func (s *Store) clickKey(clickID, kind string, id ...string) string {
	return s.keysOf(clickID).key(kind, id...)
}

// clickKeys builds the keys of one click (see clickKey) from their common
// start, so that a script call naming several keys of a click computes its
// hash tag once.
type clickKeys struct{ base string } // "<prefix>:{c:<click>}:"

func (s *Store) keysOf(clickID string) clickKeys {
	return clickKeys{base: s.opts.Prefix + ":" + clickTag(clickID) + ":"}
}

func (k clickKeys) key(kind string, id ...string) string {
	if len(id) > 0 {
		return k.base + kind + ":" + id[0]
	}
	return k.base + kind
}

// shardKeys returns the schedule keys of shard n: "{<prefix>:q:<n>}:due"
// (ZSET id -> due ms) and "{<prefix>:q:<n>}:jobs" (HASH id -> due|payload).
func (s *Store) shardKeys(n int) []string {
	tag := "{" + s.opts.Prefix + ":q:" + strconv.Itoa(n) + "}"
	return []string{tag + ":due", tag + ":jobs"}
}

// ---- helpers ----

func (s *Store) observe(op string, start time.Time) {
	if s.opts.Metrics != nil {
		s.opts.Metrics.RedisSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	}
}

func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// corruptf is an ErrCorrupt error.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %w", ErrCorrupt, fmt.Errorf(format, args...))
}

// IsCorrupt reports whether err is permanent: the store could not read what
// Redis holds (ErrCorrupt), or Redis refused a command on it for what it is
// (WRONGTYPE: a key of another type; a script that failed on the data it
// found). Unavailability, timeouts, OOM under noeviction, LOADING, failovers
// are not: they pass.
func IsCorrupt(err error) bool {
	if errors.Is(err, ErrCorrupt) {
		return true
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.Contains(msg, "WRONGTYPE") || strings.Contains(msg, "Error running script")
}

func formatTime(t time.Time) string { return t.Format(time.RFC3339Nano) }

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

// scriptCall is one script invocation of a pipelined batch.
type scriptCall struct {
	keys []string
	args []any
}

// runPipelined runs script once per call in one pipelined round trip (a
// Cluster client splits it per node) and returns the commands, each with
// its own result or error. A call answered NOSCRIPT (new or flushed server;
// in a Cluster, per node) ran nothing and is run again with EVAL, which
// also loads the script; calls that answered keep their result.
func (s *Store) runPipelined(ctx context.Context, script *redis.Script, calls []scriptCall) []*redis.Cmd {
	return s.runPipelinedWith(ctx, script, calls, nil)
}

// runPipelinedWith is runPipelined with plain commands as well: plain, when
// set, queues them on the same pipeline before the script calls, so that
// both go in the one round trip. Their replies are in the commands plain
// kept; a NOSCRIPT retry runs only the script calls again.
func (s *Store) runPipelinedWith(ctx context.Context, script *redis.Script, calls []scriptCall, plain func(redis.Pipeliner)) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	if len(calls) == 0 && plain == nil {
		return cmds
	}
	pipe := s.rdb.Pipeline()
	if plain != nil {
		plain(pipe)
	}
	for i, c := range calls {
		cmds[i] = script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	var retry []int
	for i, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		pipe := s.rdb.Pipeline()
		for _, i := range retry {
			cmds[i] = script.Eval(ctx, pipe, calls[i].keys, calls[i].args...)
		}
		_, _ = pipe.Exec(ctx)
	}
	return cmds
}

// runBatch is the shape of every batch operation: run script once per call
// in one pipelined round trip (runPipelined), timed as op, and parse each
// reply. The first call whose command or reply fails fails the whole batch,
// its error prefixed with "dedupe: <what>: <name(i)>" (the coalescer then
// runs each request alone, so only that one fails).
func runBatch[T any](ctx context.Context, s *Store, op, what string, script *redis.Script, calls []scriptCall,
	parse func(i int, v any) (T, error), name func(i int) string) ([]T, error) {
	defer s.observe(op, time.Now())
	cmds := s.runPipelined(ctx, script, calls)
	out := make([]T, len(cmds))
	for i, c := range cmds {
		v, err := c.Result()
		if err == nil {
			out[i], err = parse(i, v)
		}
		if err != nil {
			return nil, fmt.Errorf("dedupe: %s: %s: %w", what, name(i), err)
		}
	}
	return out, nil
}

// ignoreReply is runBatch's parse for scripts whose reply carries nothing.
func ignoreReply(int, any) (struct{}, error) { return struct{}{}, nil }

// reply helpers: every script returns arrays of strings (never Lua booleans
// or numbers, whose conversion differs between RESP2 and RESP3).

func asArray(v any) ([]any, error) {
	a, ok := v.([]any)
	if !ok {
		return nil, corruptf("unexpected script reply %T", v)
	}
	return a, nil
}

func asString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case nil:
		return "", nil
	default:
		return "", corruptf("unexpected script reply element %T", v)
	}
}

func asStrings(v any) ([]string, error) {
	a, err := asArray(v)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(a))
	for i, e := range a {
		if out[i], err = asString(e); err != nil {
			return nil, err
		}
	}
	return out, nil
}
