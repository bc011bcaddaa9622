package service

import (
	"context"
	"encoding/json"
	"errors"
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

// TestRebuildState: the audit topic written by a journey is read to its
// end and restored into an empty Redis; the group is rewound to a time, never
// forward; a second run adds nothing.
func TestRebuildState(t *testing.T) {
	brokers := testinfra.Kafka(t)
	rc, _, _ := testinfra.Redis(t)
	cfg := loadTestConfig(t, brokers, redisAddr(t))
	testinfra.CreateTopics(t, brokers, 2, allTopics(cfg)...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The audit of two clicks, keyed by click as the service writes it.
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	audit := func(click string, min int, goal postback.Goal, outcome record.Outcome, pbID, eventID string) record.Audit {
		return record.Audit{
			SchemaVersion: 1, PostbackID: pbID, EventID: eventID, EventKind: event.KindDeposit, MerchantID: "m1",
			ClickID: click, Network: "net", Route: "click", Goal: string(goal), Outcome: outcome, Attempts: 1,
			Amount: "10", Currency: "EUR", Params: map[string]string{"sub1": click},
			RecordedAt: base.Add(time.Duration(min) * time.Minute),
		}
	}
	records := []record.Audit{
		audit("c1", 0, postback.GoalFTD, record.OutcomeDelivered, "p1", "d1"),
		audit("c1", 1, postback.GoalRD, record.OutcomeDelivered, "p2", "d2"),
		audit("c2", 2, postback.GoalFTD, record.OutcomeFailed, "p3", "d3"),
	}
	// p3's retry is pending; its deposit is message 2 of deposits/0.
	records[2].Source = event.Source{Topic: cfg.Topics.Deposits, Partition: 0, Offset: 2}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	var msgs []kafka.Message
	for _, a := range records {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Topic: cfg.Topics.Dispatched, Key: []byte(a.ClickID), Value: b})
	}
	// Input: partition 0 of deposits holds ten messages a minute apart.
	for i := range 10 {
		msgs = append(msgs, kafka.Message{Topic: cfg.Topics.Deposits, Partition: 0, Value: []byte("{}"), Time: base.Add(time.Duration(i) * time.Minute)})
	}
	w.Balancer = kafka.BalancerFunc(func(m kafka.Message, ps ...int) int {
		if string(m.Key) == "" {
			return 0
		}
		return (&kafka.Hash{}).Balance(m, ps...)
	})
	produce(t, w, msgs...)
	// The group has consumed all ten of partition 0 and none of partition 1
	// (committed at 0).
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	// Each partition's commit checked: under load the coordinator may answer
	// a partition with a retriable error, which the request's error misses.
	if err := commitOffsets(ctx, client, cfg.Kafka.GroupID,
		map[string][]kafka.OffsetCommit{cfg.Topics.Deposits: {{Partition: 0, Offset: 10}, {Partition: 1, Offset: 0}}}); err != nil {
		t.Fatal(err)
	}

	rep, err := RebuildState(ctx, cfg, zap.NewNop(), RebuildOptions{RewindTo: base.Add(4*time.Minute + 30*time.Second), Redis: rc})
	if err != nil {
		t.Fatalf("RebuildState: %v", err)
	}
	if rep.AuditRecords != 3 || rep.Clicks != 2 || rep.FTDs[dedupe.FTDCreated] != 2 || rep.Deliveries != 2 || rep.Answers != 3 ||
		rep.Pending != 1 || rep.PendingFrom[topicPartition{cfg.Topics.Deposits, 0}] != 2 {
		t.Errorf("report %+v", rep)
	}
	// Rewound to the first message at or after base+4m30s (offset 5), and
	// further back to the pending postback's deposit (offset 2). The
	// partition committed at 0 is not moved forward.
	if len(rep.Rewound) != 1 || rep.Rewound[0] != (PartitionRewind{Topic: cfg.Topics.Deposits, Partition: 0, From: 10, To: 2}) {
		t.Errorf("rewound %+v, want deposits/0 10 -> 2 only", rep.Rewound)
	}
	// Six partitions of the other input topics were never committed.
	if len(rep.Uncommitted) != 6 || rep.Uncommitted[0].Topic == cfg.Topics.Deposits {
		t.Errorf("uncommitted %+v, want the 6 partitions of revenue, registrations, qualifications", rep.Uncommitted)
	}
	off, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: cfg.Kafka.GroupID, Topics: map[string][]int{cfg.Topics.Deposits: {0, 1}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range off.Topics[cfg.Topics.Deposits] {
		if want := map[int]int64{0: 2, 1: 0}[p.Partition]; p.CommittedOffset != want {
			t.Errorf("committed offset of deposits/%d: %d, want %d", p.Partition, p.CommittedOffset, want)
		}
	}

	store := dedupe.New(rc, dedupe.Options{Prefix: cfg.Redis.KeyPrefix, RecordTTL: cfg.Redis.RecordTTL})
	if cls, err := store.Classify(ctx, dedupe.Deposit{ClickID: "c1", EventID: "d9"}); err != nil || cls.Goal != postback.GoalRD {
		t.Errorf("new deposit of c1 after the rebuild: %+v %v, want rdep", cls, err)
	}
	if c, err := store.Claim(ctx, "c1", "p1", time.Minute); err != nil || c.State != dedupe.ClaimDelivered {
		t.Errorf("claim of delivered p1 after the rebuild: %+v %v, want delivered", c, err)
	}
	if c, err := store.Claim(ctx, "c2", "p3", time.Minute); err != nil || c.State != dedupe.ClaimAcquired {
		t.Errorf("claim of pending p3 after the rebuild: %+v %v, want acquired", c, err)
	}

	// Again: everything is there already; the group is not moved again.
	rep, err = RebuildState(ctx, cfg, zap.NewNop(), RebuildOptions{RewindTo: base.Add(4*time.Minute + 30*time.Second), Redis: rc})
	if err != nil {
		t.Fatal(err)
	}
	if rep.FTDs[dedupe.FTDKept] != 2 || rep.FTDs[dedupe.FTDCreated] != 0 || rep.Deliveries != 0 || rep.Answers != 0 || len(rep.Rewound) != 0 {
		t.Errorf("second run wrote again: %+v", rep)
	}
}

// TestRebuildStateRefusesActiveGroup: a member of the group could classify
// and send beside the rebuild, so nothing is written while one is there; a
// dry run reads all the same.
func TestRebuildStateRefusesActiveGroup(t *testing.T) {
	brokers := testinfra.Kafka(t)
	rc, _, _ := testinfra.Redis(t)
	cfg := loadTestConfig(t, brokers, redisAddr(t))
	testinfra.CreateTopics(t, brokers, 1, allTopics(cfg)...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: cfg.Kafka.GroupID, Topic: cfg.Topics.Deposits, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	go func() { _, _ = r.FetchMessage(ctx) }() // joins the group, then waits for a message
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	testinfra.WaitUntil(t, 30*time.Second, "the reader joined the group", func() bool {
		res, err := client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{cfg.Kafka.GroupID}})
		return err == nil && len(res.Groups) == 1 && len(res.Groups[0].Members) == 1
	})

	_, err := RebuildState(ctx, cfg, zap.NewNop(), RebuildOptions{Redis: rc})
	if !errors.Is(err, ErrGroupActive) || !strings.Contains(err.Error(), cfg.Kafka.GroupID) {
		t.Fatalf("RebuildState beside a member: %v, want ErrGroupActive naming the group", err)
	}
	if rep, err := RebuildState(ctx, cfg, zap.NewNop(), RebuildOptions{DryRun: true}); err != nil || !rep.DryRun {
		t.Fatalf("dry run beside a member: %+v %v", rep, err)
	}
	if n, err := rc.Keys(ctx, cfg.Redis.KeyPrefix+":*").Result(); err != nil || len(n) != 0 {
		t.Errorf("keys written under the prefix: %v %v", n, err)
	}
}

// produce writes msgs in order, again while the broker is still electing
// the leaders of topics just created (UnknownTopicOrPartition), for at most
// 30 seconds; every message is written once.
func produce(t *testing.T, w *kafka.Writer, msgs ...kafka.Message) {
	t.Helper()
	var err error
	if !testinfra.Eventually(30*time.Second, func() bool {
		err = w.WriteMessages(context.Background(), msgs...)
		return !errors.Is(err, kafka.UnknownTopicOrPartition) && !errors.Is(err, kafka.LeaderNotAvailable)
	}) || err != nil {
		t.Fatalf("produce: %v", err)
	}
}
