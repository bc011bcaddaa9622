package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/internal/rebuild"
	"github.com/postbackd/postbackd/record"
)

// RebuildOptions tune RebuildState.
type RebuildOptions struct {
	// DryRun reads and folds the audit topic and reports what it would
	// write, and the rewind it would make, without writing anything.
	DryRun bool
	// RewindTo, when set, moves the group's committed offset of every input
	// partition back to its first message at or after RewindTo (never
	// forward), so that the service derives again what was in flight at the
	// loss: waiting events, parked qualifications, scheduled retries.
	RewindTo time.Time
	// Now is the clock for the items' remaining TTLs (default time.Now).
	Now func() time.Time
	// Redis replaces the client built from the configuration (tests).
	Redis redis.UniversalClient
}

// RebuildReport is what RebuildState read, wrote and rewound.
type RebuildReport struct {
	AuditRecords int
	// Unreadable are audit records that are not JSON audit records.
	Unreadable int
	Clicks     int
	// FTDs counts FTD records by what Restore did (created, merged, kept,
	// conflict); in a dry run, "would restore".
	FTDs map[dedupe.FTDRestore]int
	// Conflicts are clicks whose FTD record in Redis names another deposit
	// than the audit's first FTD (classified after the loss): click id ->
	// the deposit Redis holds. Their FTD was paid twice; nothing was changed.
	Conflicts map[string]string
	// SecondFTDs are clicks the audit shows with more than one FTD (an
	// earlier loss that was not rebuilt): click id -> the later deposits.
	SecondFTDs                            map[string][]string
	Contexts, Answers, Routes, Deliveries int
	// Pending are postbacks whose last audited outcome is a failed attempt
	// (a retry was scheduled, or a replay): the retry lived in Redis, so only
	// a rewind sends them again. A rewind always reaches their events:
	// PendingFrom is, per input partition, the lowest offset among them.
	Pending     int
	PendingFrom map[topicPartition]int64
	// Legacy counts postback records written before audit records carried
	// params: their clicks' params cannot be restored (routes can).
	Legacy  int
	Rewound []PartitionRewind
	// Uncommitted are the input partitions the group never committed: a
	// rewind leaves them to consumer.start_offset.
	Uncommitted []PartitionRewind
	DryRun      bool
}

// PartitionRewind is one input partition's committed offset, moved.
type PartitionRewind struct {
	Topic     string
	Partition int
	From, To  int64
}

// ErrGroupActive: RebuildState refuses to write while the consumer group
// has members: they would classify and send beside the rebuild.
var ErrGroupActive = errors.New("the consumer group has active members")

// restoreBatch is how many clicks one pipelined Redis round trip restores.
const restoreBatch = 256

// RebuildState recovers the Redis state of cfg from its audit topic (see
// package rebuild): it reads every partition of the audit topic from its
// first offset to the end it had when the rebuild started, restores each
// partition's clicks, and rewinds the group when asked. It refuses to write
// while the group has members: stop every postbackd of the group first.
func RebuildState(ctx context.Context, cfg *config.Config, log *zap.Logger, o RebuildOptions) (*RebuildReport, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	kc, err := newKafkaClients(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	client := kc.client()
	if !o.DryRun {
		if err := checkGroupEmpty(ctx, client, cfg.Kafka.GroupID); err != nil {
			return nil, err
		}
	}
	var store *dedupe.Store
	if !o.DryRun {
		s, done, err := openStore(ctx, cfg, o.Redis)
		if err != nil {
			return nil, err
		}
		defer done()
		store = s
	}

	rep := &RebuildReport{
		FTDs: map[dedupe.FTDRestore]int{}, Conflicts: map[string]string{}, SecondFTDs: map[string][]string{},
		PendingFrom: map[topicPartition]int64{},
		DryRun:      o.DryRun,
	}
	topic := cfg.Topics.Dispatched
	var ends []partitionEnd
	err = retryKafka(ctx, func() (err error) {
		ends, err = partitionEnds(ctx, client, topic)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("kafka: audit topic %s: %w", topic, err)
	}
	now := o.Now()
	for _, pe := range ends {
		fold := rebuild.NewFold()
		n, err := readPartition(ctx, kc, topic, pe, func(m kafka.Message) {
			var a record.Audit
			if err := json.Unmarshal(m.Value, &a); err != nil {
				rep.Unreadable++
				return
			}
			fold.Add(a)
		})
		rep.AuditRecords += n
		if err != nil {
			return rep, fmt.Errorf("kafka: audit topic %s partition %d: %w", topic, pe.partition, err)
		}
		if !o.DryRun {
			if err := checkGroupEmpty(ctx, client, cfg.Kafka.GroupID); err != nil {
				return rep, err
			}
		}
		if err := restorePartition(ctx, store, fold, now, cfg.Redis.RecordTTL, rep); err != nil {
			return rep, fmt.Errorf("redis: %w", err)
		}
		log.Info("audit partition rebuilt", zap.String("topic", topic), zap.Int("partition", pe.partition),
			zap.Int("records", n), zap.Int("clicks", fold.Len()))
	}
	if !o.RewindTo.IsZero() {
		inputs := InputTopics(cfg)
		if !o.DryRun {
			// Nobody may have joined while the rebuild ran: a member would
			// have worked beside it.
			if err := checkGroupEmpty(ctx, client, cfg.Kafka.GroupID); err != nil {
				return rep, err
			}
		}
		if rep.Rewound, rep.Uncommitted, err = rewindGroup(ctx, client, cfg.Kafka.GroupID, inputs, o.RewindTo, rep.PendingFrom, o.DryRun); err != nil {
			return rep, fmt.Errorf("kafka: rewind group %s: %w", cfg.Kafka.GroupID, err)
		}
	}
	return rep, nil
}

// topicPartition names one partition.
type topicPartition struct {
	Topic     string
	Partition int
}

// checkGroupEmpty fails with ErrGroupActive when the group has members.
func checkGroupEmpty(ctx context.Context, client *kafka.Client, group string) error {
	var res *kafka.DescribeGroupsResponse
	err := retryKafka(ctx, func() (err error) {
		res, err = client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err == nil {
			for _, g := range res.Groups {
				err = errors.Join(err, g.Error)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("kafka: describe group %s: %w", group, err)
	}
	for _, g := range res.Groups {
		if len(g.Members) > 0 {
			hosts := make([]string, 0, len(g.Members))
			for _, m := range g.Members {
				hosts = append(hosts, m.ClientHost)
			}
			sort.Strings(hosts)
			return fmt.Errorf("%w: group %s has %d (%v): stop every postbackd of the group first, or use --dry-run",
				ErrGroupActive, group, len(g.Members), hosts)
		}
	}
	return nil
}

// restorePartition writes the fold's clicks (store nil: a dry run, which
// only counts).
func restorePartition(ctx context.Context, store *dedupe.Store, fold *rebuild.Fold, now time.Time, ttl time.Duration, rep *RebuildReport) error {
	clicks := fold.Clicks(now, ttl)
	rep.Clicks += len(clicks)
	for id, later := range fold.SecondFTDs() {
		rep.SecondFTDs[id] = later
	}
	n, from := fold.Pending()
	rep.Pending += n
	for src := range from {
		tp := topicPartition{src.Topic, src.Partition}
		if off, ok := rep.PendingFrom[tp]; !ok || src.Offset < off {
			rep.PendingFrom[tp] = src.Offset
		}
	}
	rep.Legacy += fold.Legacy
	if store == nil {
		for _, c := range clicks {
			if c.FTD != nil {
				rep.FTDs["would restore"]++
			}
			if c.Context != nil {
				rep.Contexts++
			}
			rep.Answers += len(c.Answers)
			rep.Routes += len(c.Routes)
			rep.Deliveries += len(c.Deliveries)
		}
		return nil
	}
	for len(clicks) > 0 {
		b := clicks[:min(restoreBatch, len(clicks))]
		clicks = clicks[len(b):]
		res, err := store.RestoreBatch(ctx, b)
		if err != nil {
			return err
		}
		for i, r := range res {
			if r.FTD != dedupe.FTDNone {
				rep.FTDs[r.FTD]++
			}
			if r.FTD == dedupe.FTDConflict {
				rep.Conflicts[b[i].ClickID] = r.ExistingFTD
			}
			if r.Context {
				rep.Contexts++
			}
			rep.Answers += r.Answers
			rep.Routes += r.Routes
			rep.Deliveries += r.Deliveries
		}
	}
	return nil
}

// rewindGroup moves the group's committed offset of every partition of
// topics back to the partition's first message at or after t (its end
// when there is none); a partition committed before that keeps its offset,
// one never committed is left to the consumer's start_offset.
func rewindGroup(ctx context.Context, client *kafka.Client, group string, topics []string, t time.Time,
	reach map[topicPartition]int64, dryRun bool) (out, uncommitted []PartitionRewind, err error) {
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, nil, err
	}
	parts := map[string][]int{}
	for _, mt := range meta.Topics {
		if mt.Error != nil {
			return nil, nil, fmt.Errorf("topic %s: %w", mt.Name, mt.Error)
		}
		for _, p := range mt.Partitions {
			parts[mt.Name] = append(parts[mt.Name], p.ID)
		}
	}
	var committed *kafka.OffsetFetchResponse
	err = retryKafka(ctx, func() (err error) {
		committed, err = client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: parts})
		if err == nil {
			err = committed.Error
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	at := map[string][]kafka.OffsetRequest{}
	last := map[string][]kafka.OffsetRequest{}
	for topic, ps := range parts {
		for _, p := range ps {
			at[topic] = append(at[topic], kafka.TimeOffsetOf(p, t))
			last[topic] = append(last[topic], kafka.LastOffsetOf(p))
		}
	}
	var atRes, lastRes *kafka.ListOffsetsResponse
	err = retryKafka(ctx, func() (err error) {
		if atRes, err = client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: at}); err != nil {
			return err
		}
		if lastRes, err = client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: last}); err != nil {
			return err
		}
		for _, res := range []*kafka.ListOffsetsResponse{atRes, lastRes} {
			for _, ps := range res.Topics {
				for _, po := range ps {
					err = errors.Join(err, po.Error)
				}
			}
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	target := func(topic string, p int) (int64, error) {
		for _, po := range atRes.Topics[topic] {
			if po.Partition != p {
				continue
			}
			// kafka-go files a time lookup's answer under Offsets; an empty
			// map means no message at or after t: the partition's end.
			for off := range po.Offsets {
				if off >= 0 {
					return off, nil
				}
			}
		}
		for _, po := range lastRes.Topics[topic] {
			if po.Partition == p {
				if po.Error != nil {
					return 0, po.Error
				}
				return po.LastOffset, nil
			}
		}
		return 0, fmt.Errorf("no offsets for %s/%d", topic, p)
	}
	commit := map[string][]kafka.OffsetCommit{}
	for topic, cps := range committed.Topics {
		for _, cp := range cps {
			if cp.Error != nil {
				return nil, nil, fmt.Errorf("%s/%d: %w", topic, cp.Partition, cp.Error)
			}
			if cp.CommittedOffset < 0 {
				uncommitted = append(uncommitted, PartitionRewind{Topic: topic, Partition: cp.Partition, From: -1, To: -1})
				continue // never committed
			}
			to, err := target(topic, cp.Partition)
			if err != nil {
				return nil, nil, err
			}
			if off, ok := reach[topicPartition{topic, cp.Partition}]; ok && off < to {
				to = off // a pending postback's event: it must be consumed again
			}
			if to >= cp.CommittedOffset {
				continue
			}
			out = append(out, PartitionRewind{Topic: topic, Partition: cp.Partition, From: cp.CommittedOffset, To: to})
			commit[topic] = append(commit[topic], kafka.OffsetCommit{Partition: cp.Partition, Offset: to})
		}
	}
	sortRewinds(out)
	sortRewinds(uncommitted)
	if dryRun || len(commit) == 0 {
		return out, uncommitted, nil
	}
	return out, uncommitted, commitOffsets(ctx, client, group, commit)
}

// commitOffsets commits offsets for group, which must be empty (no member:
// the commit is outside any generation), retrying while the broker's
// answer is retriable; a partition's own error fails it, as the request's
// does.
func commitOffsets(ctx context.Context, client *kafka.Client, group string, offsets map[string][]kafka.OffsetCommit) error {
	return retryKafka(ctx, func() error {
		res, err := client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: offsets})
		if err != nil {
			return err
		}
		for topic, ps := range res.Topics {
			for _, p := range ps {
				if p.Error != nil {
					return fmt.Errorf("commit %s/%d: %w", topic, p.Partition, p.Error)
				}
			}
		}
		return nil
	})
}

func sortRewinds(rs []PartitionRewind) {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Topic != rs[j].Topic {
			return rs[i].Topic < rs[j].Topic
		}
		return rs[i].Partition < rs[j].Partition
	})
}

// retryKafka runs a request again while the broker's answer is
// retriable (kafka.Error.Temporary: a coordinator or leader moving or
// loading, as after a broker restart or a topic's creation), for at most a
// minute.
func retryKafka(ctx context.Context, op func() error) error {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxElapsedTime(time.Minute))
	return backoff.Retry(func() error {
		err := op()
		var kerr kafka.Error
		if err != nil && !(errors.As(err, &kerr) && kerr.Temporary()) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx))
}
