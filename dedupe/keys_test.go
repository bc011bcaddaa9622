package dedupe

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/postback"
)

// crc16 is Redis Cluster's key hash (CRC-16/XMODEM), written out here so
// the test does not trust the code under test.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slot is the Cluster slot of key, honouring hash tags as Redis does: the
// text between the first '{' and the next '}', if non-empty.
func slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16([]byte(key)) % 16384)
}

func TestCRC16(t *testing.T) {
	// Reference values from the Redis Cluster specification and redis-cli
	// CLUSTER KEYSLOT.
	for key, want := range map[string]int{"123456789": 0x31C3 % 16384, "foo": 12182, "{user1000}.following": 3443, "{user1000}.followers": 3443, "foo{}{bar}": 8363} {
		if got := slot(key); got != want {
			t.Errorf("slot(%q) = %d, want %d", key, got, want)
		}
	}
}

// keyRecorder records the keys of every command sent, by operation.
type keyRecorder struct {
	mu   sync.Mutex
	keys [][]string
}

func (r *keyRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *keyRecorder) record(cmd redis.Cmder) {
	args := cmd.Args()
	name := strings.ToLower(cmd.Name())
	var keys []string
	switch name {
	case "eval", "evalsha":
		n, _ := strconv.Atoi(toString(args[2]))
		for _, k := range args[3 : 3+n] {
			keys = append(keys, toString(k))
		}
	case "ping", "hello", "client":
		return
	default:
		keys = []string{toString(args[1])}
	}
	r.mu.Lock()
	r.keys = append(r.keys, keys)
	r.mu.Unlock()
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return fmt.Sprint(v)
}

func (r *keyRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.record(cmd)
		return next(ctx, cmd)
	}
}

func (r *keyRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			r.record(c)
		}
		return next(ctx, cmds)
	}
}

func (r *keyRecorder) take() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.keys
	r.keys = nil
	return k
}

// TestKeySlots runs every click operation for awkward click ids and checks
// that all keys of one click (across all its commands) hash to one Cluster
// slot, and that different clicks do not share keys.
func TestKeySlots(t *testing.T) {
	ctx := context.Background()
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	rec := &keyRecorder{}
	c.AddHook(rec)
	s := New(c, Options{Prefix: "pb"})

	allKeys := map[string]string{} // key -> click id
	for _, click := range []string{"abc", "a}b", "{a}", "a{b}c", "{", "}", "", "x:y", "h:deadbeef"} {
		if click == "" {
			continue // refused with ErrEmptyID before Redis
		}
		ev := "e-" + click
		pb := postback.NewID("net", postback.GoalFTD, ev, postback.StatusPending)
		ops := []func() error{
			func() error {
				_, err := s.Attribute(ctx, Touch{ClickID: click, EventID: ev, Network: "n", Params: map[string]string{"k": "v"}, Release: true})
				return err
			},
			func() error {
				_, err := s.Attribute(ctx, Touch{ClickID: click, EventID: "w", WaitPayload: []byte("p")})
				return err
			},
			func() error { return s.FinishWaiting(ctx, click, "w") },
			func() error { _, err := s.Waiting(ctx, click, "w"); return err },
			func() error { _, err := s.PendingWaits(ctx, click); return err },
			func() error { _, _, err := s.LoadClick(ctx, click); return err },
			func() error {
				_, err := s.Qualify(ctx, Qualification{ClickID: click, EventID: "q", Status: "approved"})
				return err
			},
			func() error {
				_, err := s.Classify(ctx, Deposit{ClickID: click, EventID: ev, Amount: "1", Currency: "EUR"})
				return err
			},
			func() error { _, err := s.Claim(ctx, click, pb, time.Minute); return err },
			func() error { return s.Release(ctx, click, pb, "x") },
			func() error {
				_, err := s.MarkDelivered(ctx, click, pb, Delivery{}, &FTDDelivered{EventID: ev})
				return err
			},
			func() error { _, _, err := s.TakeOrphan(ctx, click, "q"); return err },
			func() error { _, err := s.FailFTD(ctx, click, ev, "refused"); return err },
		}
		for _, op := range ops {
			if err := op(); err != nil {
				t.Fatalf("click %q: %v", click, err)
			}
		}
		want := -1
		for _, cmdKeys := range rec.take() {
			for _, k := range cmdKeys {
				if want == -1 {
					want = slot(k)
				}
				if got := slot(k); got != want {
					t.Errorf("click %q: key %q in slot %d, other keys in %d", click, k, got, want)
				}
				if prev, ok := allKeys[k]; ok && prev != click {
					t.Errorf("key %q used by clicks %q and %q", k, prev, click)
				}
				allKeys[k] = click
			}
		}
		if want == -1 {
			t.Fatalf("click %q: no keys recorded", click)
		}
	}

	// Each schedule script touches one shard's keys, in one slot.
	for i := range 50 {
		id := "job-" + strconv.Itoa(i)
		if err := s.Schedule(ctx, id, time.Now(), nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Ack(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.TakeDue(ctx, time.Now(), time.Minute, 100); err != nil {
		t.Fatal(err)
	}
	for _, cmdKeys := range rec.take() {
		for _, k := range cmdKeys[1:] {
			if slot(k) != slot(cmdKeys[0]) {
				t.Errorf("schedule command spans slots: %v", cmdKeys)
			}
		}
	}
}

func TestClickTag(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"abc", "{c:abc}"},
		{"x y:/é", "{c:x y:/é}"},
		{"a}b", "{h:" + sha1hex("a}b") + "}"},
		{"{a", "{h:" + sha1hex("{a") + "}"},
	} {
		if got := clickTag(tc.id); got != tc.want {
			t.Errorf("clickTag(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
	// Braced ids sharing a prefix must not pile onto one slot.
	if slot("pb:"+clickTag("hot}1")+":ftd") == slot("pb:"+clickTag("hot}2")+":ftd") {
		t.Error("click ids differing after a brace share a slot")
	}
}

func sha1hex(s string) string {
	h := sha1.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want []string // substrings of the error; none = valid
	}{
		{"defaults", Options{}, nil},
		{"explicit", Options{Prefix: "pb", RecordTTL: time.Hour, Shards: 4}, nil},
		{"everything wrong", Options{Prefix: "p{b}", RecordTTL: -time.Second, Shards: -1}, []string{"dedupe.prefix", "dedupe.record_ttl", "dedupe.shards"}},
	} {
		err := tc.o.Validate()
		if (err != nil) != (len(tc.want) > 0) {
			t.Fatalf("%s: Validate() = %v", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v does not mention %s", tc.name, err, w)
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("New with invalid options did not panic")
		}
	}()
	New(nil, Options{Prefix: "{"})
}
