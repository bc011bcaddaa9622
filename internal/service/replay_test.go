package service

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/internal/testinfra"
	"github.com/postbackd/postbackd/postback"
	"github.com/postbackd/postbackd/record"
)

// TestReplay: dead letters go back to their input topics — the raw input
// the DLQ kept, or the source message read back — once each; a postback
// delivered since, a truncated value and a source message that is gone are
// skipped with their reason; the filters select; a dry run writes nothing.
func TestReplay(t *testing.T) {
	brokers := testinfra.Kafka(t)
	rc, _, _ := testinfra.Redis(t)
	cfg := loadTestConfig(t, brokers, redisAddr(t))
	testinfra.CreateTopics(t, brokers, 1, allTopics(cfg)...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := newStore(cfg, rc, nil)
	base := time.Now().Add(-time.Hour).UTC()

	// The source of two given-up postbacks: deposits at offsets 0 and 1.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), RequiredAcks: kafka.RequireAll}
	defer w.Close()
	produce(t, w,
		kafka.Message{Topic: cfg.Topics.Deposits, Key: []byte("c2"), Value: []byte(`{"event_id":"d2"}`)},
		kafka.Message{Topic: cfg.Topics.Deposits, Key: []byte("c3"), Value: []byte(`{"event_id":"d3"}`)},
	)
	// d2's FTD postback was refused (its FTD failed); d3's was delivered
	// after it had been dead-lettered.
	if _, err := store.Classify(ctx, dedupe.Deposit{ClickID: "c2", EventID: "d2", Amount: "1", Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	for click, d := range map[string]dedupe.Delivery{"c2": {HTTPStatus: 400, Refused: "HTTP 400"}, "c3": {HTTPStatus: 200}} {
		if _, err := store.Claim(ctx, click, "pb-"+click, time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := store.MarkDelivered(ctx, click, "pb-"+click, d, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.FailFTD(ctx, "c2", "d2", "ftd_dead_lettered"); err != nil {
		t.Fatal(err)
	}

	src := func(off int64) event.Source {
		return event.Source{Topic: cfg.Topics.Deposits, Partition: 0, Offset: off}
	}
	pb := func(click, ev string) *postback.Postback {
		return &postback.Postback{ID: "pb-" + click, Partner: "net", Goal: postback.GoalFTD, ClickID: click, EventID: ev}
	}
	letters := []record.DeadLetter{
		{Reason: "unknown_merchant", Source: src(7), EventID: "d1", ClickID: "c1", Key: "c1", Value: `{"event_id":"d1"}`, RecordedAt: base},
		{Reason: "postback_refused", Source: src(0), EventID: "d2", ClickID: "c2", Postback: pb("c2", "d2"), RecordedAt: base.Add(time.Minute)},
		{Reason: "postback_refused", Source: src(1), EventID: "d3", ClickID: "c3", Postback: pb("c3", "d3"), RecordedAt: base.Add(2 * time.Minute)},
		{Reason: "schema_invalid", Source: src(8), EventID: "d4", Value: `{"event_id":`, ValueTruncated: true, ValueSize: 300000, RecordedAt: base.Add(3 * time.Minute)},
		{Reason: "max_age_exceeded", Source: src(999), EventID: "d5", ClickID: "c5", Postback: pb("c5", "d5"), RecordedAt: base.Add(4 * time.Minute)},
		{Reason: "schema_invalid", Source: event.Source{Topic: "elsewhere"}, Value: "x", RecordedAt: base.Add(5 * time.Minute)},
		// c2's qualification, dead-lettered with its FTD: replayed with it.
		{Reason: "ftd_dead_lettered", Source: event.Source{Topic: cfg.Topics.Qualifications}, EventID: "q2", ClickID: "c2", EventKind: event.KindQualification, RecordedAt: base.Add(6 * time.Minute)},
		// Older than record_ttl: Redis forgot what became of it.
		{Reason: "unknown_merchant", Source: src(7), EventID: "d6", ClickID: "c6", Key: "c6", Value: `{"event_id":"d6"}`, RecordedAt: time.Now().Add(-cfg.Redis.RecordTTL)},
	}
	produce(t, w, kafka.Message{Topic: cfg.Topics.Qualifications, Key: []byte("c2"), Value: []byte(`{"event_id":"q2"}`)})
	var msgs []kafka.Message
	for _, l := range letters {
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Topic: cfg.Topics.DLQ, Key: []byte(l.ClickID), Value: b})
	}
	produce(t, w, msgs...)

	skips := func(rep *ReplayReport) map[string]string {
		out := map[string]string{}
		for _, it := range rep.Items {
			out[it.EventID] = it.Skipped
		}
		return out
	}
	// A dry run: everything that could be replayed is listed, nothing moves.
	rep, err := Replay(ctx, cfg, zap.NewNop(), ReplayOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Read != 8 || len(rep.Items) != 8 || rep.Replayed() != 4 {
		t.Errorf("dry run: read %d, items %+v", rep.Read, rep.Items)
	}
	// The filters: a reason, a partner, a time window.
	for _, tc := range []struct {
		o    ReplayOptions
		want int
	}{
		// c2's qualification comes along with its FTD, whatever the filters.
		{ReplayOptions{DryRun: true, Reason: "postback_refused"}, 3},
		{ReplayOptions{DryRun: true, Partner: "net"}, 4},
		{ReplayOptions{DryRun: true, Since: base.Add(time.Minute), Until: base.Add(3 * time.Minute)}, 3},
	} {
		if rep, err := Replay(ctx, cfg, zap.NewNop(), tc.o); err != nil || len(rep.Items) != tc.want {
			t.Errorf("Replay(%+v): %d items %v, want %d", tc.o, len(rep.Items), err, tc.want)
		}
	}

	rep, err = Replay(ctx, cfg, zap.NewNop(), ReplayOptions{Redis: rc})
	if err != nil {
		t.Fatal(err)
	}
	got := skips(rep)
	if got["d1"] != "" || got["d2"] != "" || got["q2"] != "" || !strings.Contains(got["d6"], "older than redis.record_ttl") ||
		!strings.Contains(got["d3"], "delivered since") || !strings.Contains(got["d4"], "kept only") ||
		!strings.Contains(got["d5"], "no longer in the topic") || !strings.Contains(got[""], "not an input topic") {
		t.Errorf("replay: %v", got)
	}
	// d2's refusal and its FTD's failure are forgotten: it will be sent.
	if c, err := store.Claim(ctx, "c2", "pb-c2", time.Minute); err != nil || c.State != dedupe.ClaimAcquired {
		t.Errorf("claim of the replayed refusal: %+v %v, want acquired", c, err)
	}
	if c, err := store.Claim(ctx, "c3", "pb-c3", time.Minute); err != nil || c.State != dedupe.ClaimDelivered {
		t.Errorf("claim of the postback delivered since: %+v %v, want delivered", c, err)
	}

	// Again: nothing is replayed twice.
	rep, err = Replay(ctx, cfg, zap.NewNop(), ReplayOptions{Redis: rc})
	if err != nil {
		t.Fatal(err)
	}
	if got := skips(rep); rep.Replayed() != 0 || !strings.Contains(got["d1"], "replayed before") || !strings.Contains(got["d2"], "replayed before") {
		t.Errorf("second replay: %v", got)
	}

	// The deposits topic holds its two messages and the two replayed ones,
	// marked, with the key and value of the originals.
	kc, err := newKafkaClients(cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := partitionEnds(ctx, kc.client(), cfg.Topics.Deposits)
	if err != nil {
		t.Fatal(err)
	}
	var replayed []string
	if _, err := readPartition(ctx, kc, cfg.Topics.Deposits, ends[0], func(m kafka.Message) {
		for _, h := range m.Headers {
			if h.Key == ReplayHeader {
				replayed = append(replayed, string(m.Key)+"="+string(m.Value))
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(replayed, " ") != `c1={"event_id":"d1"} c2={"event_id":"d2"}` {
		t.Errorf("replayed messages %v", replayed)
	}

	// The replayed postback is audited as open again (a rebuild must not
	// restore its refusal); the one skipped is not.
	ends, err = partitionEnds(ctx, kc.client(), cfg.Topics.Dispatched)
	if err != nil {
		t.Fatal(err)
	}
	var audits []record.Audit
	for _, pe := range ends {
		if _, err := readPartition(ctx, kc, cfg.Topics.Dispatched, pe, func(m kafka.Message) {
			var a record.Audit
			if json.Unmarshal(m.Value, &a) == nil {
				audits = append(audits, a)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(audits) != 1 || audits[0].PostbackID != "pb-c2" || audits[0].Outcome != record.OutcomeFailed || audits[0].Reason != "replayed" {
		t.Errorf("audit records of the replay: %+v, want pb-c2 failed/replayed only", audits)
	}
}
