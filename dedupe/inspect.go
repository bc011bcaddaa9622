package dedupe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClickState is everything the store holds about one click, read for an
// operator (postbackd inspect). It is a snapshot: keys are read one by one,
// not atomically.
type ClickState struct {
	// KeyPrefix is what every key of the click starts with.
	KeyPrefix string
	Context   *ClickContext
	// ContextTTL is what is left of the context's lifetime.
	ContextTTL time.Duration
	FTD        *FTDRecord
	// Answers are the classification answers by deposit event id.
	Answers map[string]string
	// Routes are the route memos by event id.
	Routes map[string]Route
	// Postbacks are the click's postbacks Redis knows, by id: delivered,
	// refused or claimed.
	Postbacks []PostbackState
	// Parked is the qualification waiting for the FTD, or the last one that
	// did (Released says how it ended); Orphans are those dead-lettered
	// because the FTD never came.
	Parked  *ParkedState
	Orphans []ParkedState
	// Waiting are the events waiting for the click's network or
	// registration ("" payload: finished waiting).
	Waiting map[string]bool
	// Jobs are the click's scheduled jobs (retries, deadlines).
	Jobs []Job
}

// PostbackState is one postback as Redis knows it.
type PostbackState struct {
	ID string
	// Delivery is set once it was delivered or refused for good.
	Delivery *Delivery
	// Lease is what is left of a claim (a send in progress), 0 when none.
	Lease time.Duration
}

// ParkedState is a parked qualification; Released is "" while it waits,
// "released" once its status change was released, "dead_lettered".
type ParkedState struct {
	Parked
	Released string
}

// Inspect reads everything the store holds about clickID. It scans the
// click's keys (on its slot's node in a Cluster) and every schedule shard:
// an operator's tool, not for the hot path.
func (s *Store) Inspect(ctx context.Context, clickID string) (*ClickState, error) {
	if clickID == "" {
		return nil, fmt.Errorf("dedupe: inspect: %w", ErrEmptyID)
	}
	prefix := s.clickKey(clickID, "")
	st := &ClickState{KeyPrefix: prefix, Answers: map[string]string{}, Routes: map[string]Route{}, Waiting: map[string]bool{}}
	keys, err := s.scanClick(ctx, clickID, globEscape(prefix)+"*")
	if err != nil {
		return nil, fmt.Errorf("dedupe: inspect: %w", err)
	}
	postbacks := map[string]*PostbackState{}
	pbState := func(id string) *PostbackState {
		if postbacks[id] == nil {
			postbacks[id] = &PostbackState{ID: id}
		}
		return postbacks[id]
	}
	for _, key := range keys {
		kind, id, _ := strings.Cut(strings.TrimPrefix(key, prefix), ":")
		switch kind {
		case "ctx":
			b, err := s.rdb.Get(ctx, key).Bytes()
			if err != nil {
				continue // expired since the scan
			}
			var c ClickContext
			if err := json.Unmarshal(b, &c); err != nil {
				return nil, corruptf("dedupe: inspect: click context: %w", err)
			}
			st.Context = &c
			st.ContextTTL = s.rdb.PTTL(ctx, key).Val()
		case "ftd":
			v, err := s.rdb.HMGet(ctx, key, "event_id", "amount", "currency", "occurred_at", "delivered", "status",
				"status_event_id", "failed", "route_partner", "route_via", "route_params").Result()
			if err != nil {
				return nil, fmt.Errorf("dedupe: inspect: %w", err)
			}
			f, err := parseFTD(v)
			if err != nil {
				return nil, fmt.Errorf("dedupe: inspect: %w", err)
			}
			st.FTD = &f
		case "ans":
			st.Answers[id] = s.rdb.Get(ctx, key).Val()
		case "route":
			if via, partner, ok := strings.Cut(s.rdb.Get(ctx, key).Val(), "|"); ok {
				st.Routes[id] = Route{Partner: partner, Via: RouteVia(via)}
			}
		case "done":
			var d Delivery
			if err := json.Unmarshal([]byte(s.rdb.Get(ctx, key).Val()), &d); err == nil {
				pbState(id).Delivery = &d
			}
		case "lease":
			pbState(id).Lease = s.rdb.PTTL(ctx, key).Val()
		case "parked", "orphan":
			p, err := s.readParked(ctx, key)
			if err != nil || p == nil {
				continue
			}
			if kind == "parked" {
				st.Parked = p
			} else {
				st.Orphans = append(st.Orphans, *p)
			}
		case "await":
			all, err := s.rdb.HGetAll(ctx, key).Result()
			if err == nil {
				for ev, payload := range all {
					st.Waiting[ev] = payload != "-"
				}
			}
		}
	}
	for _, p := range postbacks {
		st.Postbacks = append(st.Postbacks, *p)
	}
	sort.Slice(st.Postbacks, func(i, j int) bool { return st.Postbacks[i].ID < st.Postbacks[j].ID })
	if st.Jobs, err = s.jobsOf(ctx, clickID); err != nil {
		return nil, fmt.Errorf("dedupe: inspect: %w", err)
	}
	return st, nil
}

func (s *Store) readParked(ctx context.Context, key string) (*ParkedState, error) {
	v, err := s.rdb.HMGet(ctx, key, "event_id", "status", "payload", "parked_at", "released").Result()
	if err != nil || v[0] == nil {
		return nil, err
	}
	str := func(i int) string { x, _ := v[i].(string); return x }
	at, _ := parseTime(str(3))
	released := map[string]string{"": "", "1": "released", "2": "dead_lettered"}[str(4)]
	return &ParkedState{Parked: Parked{EventID: str(0), Status: str(1), Payload: []byte(str(2)), ParkedAt: at}, Released: released}, nil
}

// globEscape quotes the characters SCAN MATCH reads as a pattern, so that
// a click id is matched as it is.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// scanClick lists the click's keys matching pattern. In a Cluster they
// are all in the click's slot, which its node lists directly; a single node
// is scanned (SCAN is linear in the keyspace: seconds for millions of keys).
func (s *Store) scanClick(ctx context.Context, clickID, pattern string) ([]string, error) {
	var out []string
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		key := s.clickKey(clickID, "ctx")
		node, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return nil, err
		}
		slot, err := cc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			return nil, err
		}
		const most = 1000000
		keys, err := node.ClusterGetKeysInSlot(ctx, int(slot), most).Result()
		if err != nil {
			return nil, err
		}
		if len(keys) == most {
			return nil, fmt.Errorf("slot %d holds %d keys or more: too many to list", slot, most)
		}
		prefix := s.clickKey(clickID, "")
		for _, k := range keys {
			if strings.HasPrefix(k, prefix) {
				out = append(out, k)
			}
		}
		sort.Strings(out)
		return out, nil
	}
	var cursor uint64
	for {
		keys, next, err := s.rdb.Scan(ctx, cursor, pattern, 10000).Result()
		if err != nil {
			return nil, err
		}
		out = append(out, keys...)
		if cursor = next; cursor == 0 {
			break
		}
	}
	sort.Strings(out)
	return out, nil
}

// jobsOf lists the scheduled jobs whose payload names the click.
func (s *Store) jobsOf(ctx context.Context, clickID string) ([]Job, error) {
	needle, err := json.Marshal(clickID)
	if err != nil {
		return nil, err
	}
	var out []Job
	for n := range s.opts.Shards {
		keys := s.shardKeys(n)
		var cursor uint64
		for {
			kv, next, err := s.rdb.HScan(ctx, keys[1], cursor, "*", 1000).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return nil, err
			}
			for i := 0; i+1 < len(kv); i += 2 {
				dueMS, payload, ok := strings.Cut(kv[i+1], "|")
				if !ok || !strings.Contains(payload, `"click_id":`+string(needle)) {
					continue
				}
				var ms int64
				_, _ = fmt.Sscan(dueMS, &ms)
				out = append(out, Job{ID: kv[i], Due: time.UnixMilli(ms), Payload: []byte(payload)})
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Due.Before(out[j].Due) })
	return out, nil
}
