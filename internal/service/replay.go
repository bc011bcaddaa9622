package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/postback"
	"github.com/postbackd/postbackd/record"
)

// ReplayOptions select the dead letters Replay sends back.
type ReplayOptions struct {
	// Reason, Partner: only dead letters with this reason, or of a postback
	// to this partner ("" any).
	Reason, Partner string
	// Since, Until bound the dead letters' recorded_at (zero: open).
	Since, Until time.Time
	// DryRun lists what would be replayed; it writes nothing and reads no
	// Redis.
	DryRun bool
	Now    func() time.Time
	// Redis replaces the client built from the configuration (tests).
	Redis redis.UniversalClient
}

// ReplayItem is one dead letter Replay looked at.
type ReplayItem struct {
	// DLQ names the dead letter: topic/partition/offset.
	DLQ                            string
	Reason, EventID, ClickID, Goal string
	Partner                        string
	// Target is the input topic its event goes back to.
	Target string
	// Skipped says why it was not replayed ("" it was, or would be).
	Skipped string
}

// ReplayReport is what Replay read and did.
type ReplayReport struct {
	// Read counts the DLQ's records; the Items are those that matched.
	Read   int
	Items  []ReplayItem
	DryRun bool
}

// Replayed counts the items replayed (or that would be, in a dry run).
func (r *ReplayReport) Replayed() int {
	n := 0
	for _, it := range r.Items {
		if it.Skipped == "" {
			n++
		}
	}
	return n
}

// letter is one dead letter read from the DLQ.
type letter struct {
	item ReplayItem
	dl   record.DeadLetter
	pb   *postback.Postback
}

// ReplayHeader marks a message that Replay produced: its value is the dead
// letter's coordinates.
const ReplayHeader = "postbackd-replay"

// Replay sends dead letters back to their input topics, where the running
// service handles them again as any event: invalid input once the cause is
// fixed (a merchant or partner added to the configuration, say), and
// postbacks given up on once the partner takes them again — their
// refusal is forgotten first (and the FTD's failure, so its qualification
// waits for it instead of being dead-lettered again); a postback delivered
// since is skipped. The stable postback ids keep every send single, and a
// replayed dead letter is remembered (for redis.record_ttl), so a second
// replay skips it.
func Replay(ctx context.Context, cfg *config.Config, log *zap.Logger, o ReplayOptions) (*ReplayReport, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	kc, err := newKafkaClients(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	client := kc.client()
	var store *dedupe.Store
	if !o.DryRun {
		s, done, err := openStore(ctx, cfg, o.Redis)
		if err != nil {
			return nil, err
		}
		defer done()
		store = s
	}
	topic := cfg.Topics.DLQ
	var ends []partitionEnd
	if err := retryKafka(ctx, func() (err error) { ends, err = partitionEnds(ctx, client, topic); return err }); err != nil {
		return nil, fmt.Errorf("kafka: DLQ topic %s: %w", topic, err)
	}
	rep := &ReplayReport{DryRun: o.DryRun}
	var all []letter
	for _, pe := range ends {
		n, err := readPartition(ctx, kc, topic, pe, func(m kafka.Message) {
			var dl record.DeadLetter
			if json.Unmarshal(m.Value, &dl) != nil {
				return
			}
			l := letter{dl: dl, item: ReplayItem{
				DLQ:    topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10),
				Reason: dl.Reason, EventID: dl.EventID, ClickID: dl.ClickID, Target: dl.Source.Topic,
			}}
			if dl.Postback != nil {
				b, _ := json.Marshal(dl.Postback)
				var pb postback.Postback
				if json.Unmarshal(b, &pb) == nil && pb.ID != "" {
					l.pb = &pb
					l.item.Partner, l.item.Goal = pb.Partner, string(pb.Goal)
				}
			}
			all = append(all, l)
		})
		rep.Read += n
		if err != nil {
			return rep, fmt.Errorf("kafka: DLQ topic %s partition %d: %w", topic, pe.partition, err)
		}
	}

	letters := selectLetters(all, o)
	inputs := InputTopics(cfg)
	// Beyond record_ttl Redis has forgotten what became of a postback (its
	// delivery, an earlier replay): replaying it could pay twice.
	horizon := o.Now().Add(-(cfg.Redis.RecordTTL - time.Hour))
	w := kc.writer()
	defer w.Close()
	for _, l := range letters {
		it := l.item
		msg, skip, err := replayMessage(ctx, client, inputs, l.dl)
		if err != nil {
			return rep, err
		}
		if skip == "" && l.dl.RecordedAt.Before(horizon) {
			skip = "older than redis.record_ttl: Redis no longer knows whether it was delivered or replayed since, so a replay could pay twice"
		}
		if skip == "" && store != nil {
			if at, done, err := store.Replayed(ctx, it.DLQ); err != nil {
				return rep, fmt.Errorf("redis: %w", err)
			} else if done {
				skip = "replayed before, at " + at.UTC().Format(time.RFC3339)
			}
		}
		if skip == "" && store != nil && l.pb != nil {
			ftdEvent := ""
			if l.pb.Goal == postback.GoalFTD {
				ftdEvent = l.pb.EventID
			}
			prep, err := store.PrepareReplay(ctx, l.pb.ClickID, l.pb.ID, ftdEvent)
			if err != nil {
				return rep, fmt.Errorf("redis: %w", err)
			}
			if prep == dedupe.ReplayDelivered {
				skip = "delivered since it was dead-lettered"
			}
		}
		if skip == "" && !o.DryRun && l.pb != nil {
			// Audited as open again: a rebuild of Redis from the audit must
			// not restore the refusal this replay forgot.
			if err := w.WriteMessages(ctx, replayAudit(cfg, *l.pb, l.dl, it.DLQ, o.Now())); err != nil {
				return rep, fmt.Errorf("kafka: audit the replay: %w", err)
			}
		}
		if skip == "" && !o.DryRun {
			msg.Headers = append(msg.Headers, kafka.Header{Key: ReplayHeader, Value: []byte(it.DLQ)})
			if err := w.WriteMessages(ctx, msg); err != nil {
				return rep, fmt.Errorf("kafka: produce to %s: %w", msg.Topic, err)
			}
			if err := store.MarkReplayed(ctx, it.DLQ, o.Now()); err != nil {
				return rep, fmt.Errorf("redis: %w", err)
			}
			log.Info("dead letter replayed", zap.String("dlq", it.DLQ), zap.String("reason", it.Reason),
				zap.String("event_id", it.EventID), zap.String("topic", msg.Topic))
		}
		it.Skipped = skip
		rep.Items = append(rep.Items, it)
	}
	return rep, nil
}

// selectLetters are the letters o selects, in DLQ order, and with each
// dead-lettered FTD the dead letters of its click's qualifications that
// followed it there (ftd_dead_lettered, ftd_not_sent), whatever the
// filters: replayed without them, the FTD would be sent and its status
// change would stay behind.
func selectLetters(all []letter, o ReplayOptions) []letter {
	ftdClicks := map[string]bool{}
	picked := make([]bool, len(all))
	for i, l := range all {
		if o.matches(l.dl, l.item) {
			picked[i] = true
			if l.item.Goal == string(postback.GoalFTD) {
				ftdClicks[l.dl.ClickID] = true
			}
		}
	}
	var out []letter
	for i, l := range all {
		companion := ftdClicks[l.dl.ClickID] && (l.dl.Reason == "ftd_dead_lettered" || l.dl.Reason == "ftd_not_sent")
		if picked[i] || companion {
			out = append(out, l)
		}
	}
	return out
}

// replayAudit is the audit record of a postback sent back by replay: a
// failed outcome (open again, to be attempted when its event comes), reason
// "replayed".
func replayAudit(cfg *config.Config, pb postback.Postback, dl record.DeadLetter, dlq string, now time.Time) kafka.Message {
	kind := event.KindRegistration
	switch pb.Goal {
	case postback.GoalFTD, postback.GoalRD:
		kind = event.KindDeposit
	case postback.GoalFTDStatus:
		kind = event.KindQualification
	case postback.GoalRevshare:
		kind = event.KindRevenue
	}
	a := record.Audit{
		SchemaVersion: record.SchemaVersion, PostbackID: pb.ID, EventID: pb.EventID, EventKind: kind, Source: dl.Source,
		MerchantID: pb.Merchant, ClickID: pb.ClickID, Network: pb.Partner, Route: pb.Route, ClickNetwork: pb.ClickNetwork,
		Goal: string(pb.Goal), Status: pb.Status, Currency: pb.Currency, Params: pb.Params, Outcome: record.OutcomeFailed,
		Reason: "replayed", Error: "dead letter " + dlq + " (" + dl.Reason + ") replayed: attempted again when its event is consumed",
		Attempts: pb.Attempts, RecordedAt: now.UTC(),
	}
	if pb.HasAmount {
		a.Amount = pb.Amount.String()
	}
	if !pb.OccurredAt.IsZero() {
		t := pb.OccurredAt.UTC()
		a.OccurredAt = &t
	}
	b, _ := json.Marshal(a) // a record of plain values always encodes
	return kafka.Message{Topic: cfg.Topics.Dispatched, Key: []byte(pb.ClickID), Value: b}
}

func (o ReplayOptions) matches(dl record.DeadLetter, it ReplayItem) bool {
	return (o.Reason == "" || dl.Reason == o.Reason) &&
		(o.Partner == "" || it.Partner == o.Partner) &&
		(o.Since.IsZero() || !dl.RecordedAt.Before(o.Since)) &&
		(o.Until.IsZero() || dl.RecordedAt.Before(o.Until))
}

// replayMessage is the input message a dead letter replays, or why it
// cannot be replayed: the raw input the DLQ kept, or else the source
// message, read back from its input topic.
func replayMessage(ctx context.Context, client *kafka.Client, inputs []string, dl record.DeadLetter) (kafka.Message, string, error) {
	if !slices.Contains(inputs, dl.Source.Topic) {
		if dl.Source.Topic == "" {
			return kafka.Message{}, "no source to replay", nil
		}
		return kafka.Message{}, "source topic " + dl.Source.Topic + " is not an input topic of this configuration", nil
	}
	if dl.Reason == "ftd_record_lost" {
		return kafka.Message{}, "delivered (its FTD record was lost): nothing to send", nil
	}
	if dl.Value != "" || dl.ValueTruncated {
		if dl.ValueTruncated {
			return kafka.Message{}, fmt.Sprintf("the DLQ kept only %d of its %d bytes: replay it from %s/%d/%d",
				len(dl.Value), dl.ValueSize, dl.Source.Topic, dl.Source.Partition, dl.Source.Offset), nil
		}
		return kafka.Message{Topic: dl.Source.Topic, Key: []byte(dl.Key), Value: []byte(dl.Value)}, "", nil
	}
	m, err := readAt(ctx, client, dl.Source)
	if errors.Is(err, errGone) {
		return kafka.Message{}, fmt.Sprintf("its source message %s/%d/%d is no longer in the topic", dl.Source.Topic, dl.Source.Partition, dl.Source.Offset), nil
	}
	if err != nil {
		return kafka.Message{}, "", fmt.Errorf("kafka: read %s/%d/%d: %w", dl.Source.Topic, dl.Source.Partition, dl.Source.Offset, err)
	}
	return m, "", nil
}

var errGone = errors.New("message no longer in the topic")

// readAt reads the message at src, errGone when the topic no longer has it.
func readAt(ctx context.Context, client *kafka.Client, src event.Source) (kafka.Message, error) {
	var res *kafka.FetchResponse
	err := retryKafka(ctx, func() (err error) {
		res, err = client.Fetch(ctx, &kafka.FetchRequest{Topic: src.Topic, Partition: src.Partition, Offset: src.Offset,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 500 * time.Millisecond})
		if err == nil && res.Error != nil && !errors.Is(res.Error, kafka.OffsetOutOfRange) {
			err = res.Error
		}
		return err
	})
	if err != nil {
		return kafka.Message{}, err
	}
	if errors.Is(res.Error, kafka.OffsetOutOfRange) || res.Records == nil {
		return kafka.Message{}, errGone
	}
	for {
		r, err := res.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			return kafka.Message{}, errGone // compacted away
		}
		if err != nil {
			return kafka.Message{}, err
		}
		if r.Offset < src.Offset {
			continue
		}
		if r.Offset > src.Offset {
			return kafka.Message{}, errGone
		}
		m := kafka.Message{Topic: src.Topic}
		if m.Key, err = readBytes(r.Key); err == nil {
			m.Value, err = readBytes(r.Value)
		}
		return m, err
	}
}

func readBytes(b kafka.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer b.Close()
	return io.ReadAll(b)
}
