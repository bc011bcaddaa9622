package service

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
)

// Reading a topic from its start to the end it has now: rebuild-state reads
// the audit topic, replay the DLQ.

type partitionEnd struct {
	partition   int
	first, last int64 // last: the offset the next message will get
}

// partitionEnds lists the topic's partitions with their first and next
// offsets, as of now.
func partitionEnds(ctx context.Context, client *kafka.Client, topic string) ([]partitionEnd, error) {
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil || len(meta.Topics[0].Partitions) == 0 {
		return nil, fmt.Errorf("topic %s: %w", topic, ErrMissingTopics)
	}
	var firsts, lasts []kafka.OffsetRequest
	for _, p := range meta.Topics[0].Partitions {
		firsts = append(firsts, kafka.FirstOffsetOf(p.ID))
		lasts = append(lasts, kafka.LastOffsetOf(p.ID))
	}
	byPartition := map[int]*partitionEnd{}
	for _, reqs := range [][]kafka.OffsetRequest{firsts, lasts} {
		res, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
		if err != nil {
			return nil, err
		}
		for _, po := range res.Topics[topic] {
			if po.Error != nil {
				return nil, fmt.Errorf("partition %d: %w", po.Partition, po.Error)
			}
			pe := byPartition[po.Partition]
			if pe == nil {
				pe = &partitionEnd{partition: po.Partition}
				byPartition[po.Partition] = pe
			}
			if reqs[0].Timestamp == kafka.FirstOffset {
				pe.first = po.FirstOffset
			} else {
				pe.last = po.LastOffset
			}
		}
	}
	out := make([]partitionEnd, 0, len(byPartition))
	for _, pe := range byPartition {
		out = append(out, *pe)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].partition < out[j].partition })
	return out, nil
}

// readIdle bounds the wait for the next message of a partition that has
// more before its end: a broker that stops answering fails the rebuild
// instead of hanging it.
const readIdle = 30 * time.Second

// readPartition hands each message of the partition from pe.first up to
// pe.last to each, in offset order.
func readPartition(ctx context.Context, kc *kafkaClients, topic string, pe partitionEnd, each func(kafka.Message)) (records int, err error) {
	if pe.last <= pe.first {
		return 0, nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: kc.brokers, Topic: topic, Partition: pe.partition, Dialer: kc.dialer,
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 500 * time.Millisecond,
	})
	defer r.Close()
	if err := r.SetOffset(pe.first); err != nil {
		return 0, err
	}
	for r.Offset() < pe.last {
		rctx, cancel := context.WithTimeout(ctx, readIdle)
		m, err := r.ReadMessage(rctx)
		cancel()
		if err != nil {
			return records, fmt.Errorf("read at offset %d (end %d): %w", r.Offset(), pe.last, err)
		}
		records++
		each(m)
		if m.Offset+1 >= pe.last {
			break
		}
	}
	return records, nil
}
