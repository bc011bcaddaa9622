package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/record"
)

// kafkaClient returns a client with a transport of its own: kafka-go's
// shared default transport caches cluster metadata and answers "unknown
// topic" for a topic created after its last refresh. Call done when finished.
func kafkaClient(brokers []string) (c *kafka.Client, done func()) {
	tr := &kafka.Transport{}
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}, tr.CloseIdleConnections
}

// partitionCounts reads the partition count of each topic.
func partitionCounts(t *testing.T, brokers []string, topics []string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, done := kafkaClient(brokers)
	defer done()
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	out := map[string]int{}
	for _, tp := range meta.Topics {
		if tp.Error != nil {
			t.Fatalf("metadata of %s: %v", tp.Name, tp.Error)
		}
		out[tp.Name] = len(tp.Partitions)
	}
	return out
}

// produce writes msgs to the test's topics, keyed by click, acknowledged
// by all in-sync replicas. One call keeps each key's order per topic.
func (e *testEnv) produce(msgs []inMsg) {
	e.t.Helper()
	w := &kafka.Writer{
		Addr: kafka.TCP(e.brokers...), Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 1000, BatchTimeout: time.Millisecond,
		Transport: &kafka.Transport{}, // fresh metadata: see kafkaClient
	}
	defer w.Close()
	km := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		km[i] = kafka.Message{Topic: e.topics[m.role], Key: []byte(m.key), Value: m.value}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, km...); err != nil {
		e.t.Fatalf("produce %d messages: %v", len(km), err)
	}
}

// endOffsets returns, per topic and partition, the offset of the next
// message to be written (the high watermark).
func endOffsets(t *testing.T, brokers []string, topics []string) map[string]map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	parts := partitionCounts(t, brokers, topics)
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, tp := range topics {
		for p := 0; p < parts[tp]; p++ {
			req.Topics[tp] = append(req.Topics[tp], kafka.LastOffsetOf(p))
		}
	}
	c, done := kafkaClient(brokers)
	defer done()
	// Right after a topic's creation a partition's leader may still be
	// moving (NotLeaderForPartition, retriable): ask again, within ctx.
	for {
		res, err := c.ListOffsets(ctx, req)
		if err != nil {
			t.Fatalf("list offsets: %v", err)
		}
		out := map[string]map[int]int64{}
		var retry error
		for tp, ps := range res.Topics {
			out[tp] = map[int]int64{}
			for _, p := range ps {
				var kerr kafka.Error
				switch {
				case p.Error == nil:
					out[tp][p.Partition] = p.LastOffset
				case errors.As(p.Error, &kerr) && kerr.Temporary() && ctx.Err() == nil:
					retry = p.Error
				default:
					t.Fatalf("list offsets %s/%d: %v", tp, p.Partition, p.Error)
				}
			}
		}
		if retry == nil {
			return out
		}
		time.Sleep(100 * time.Millisecond) // pause before asking again, bounded by ctx
	}
}

// committed returns the group's committed offsets (-1: none yet).
func committed(t *testing.T, brokers []string, group string, topics []string) map[string]map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	parts := partitionCounts(t, brokers, topics)
	req := &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{}}
	for _, tp := range topics {
		for p := 0; p < parts[tp]; p++ {
			req.Topics[tp] = append(req.Topics[tp], p)
		}
	}
	c, done := kafkaClient(brokers)
	defer done()
	res, err := c.OffsetFetch(ctx, req)
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	if res.Error != nil {
		t.Fatalf("offset fetch: %v", res.Error)
	}
	out := map[string]map[int]int64{}
	for tp, ps := range res.Topics {
		out[tp] = map[int]int64{}
		for _, p := range ps {
			if p.Error != nil {
				t.Fatalf("offset fetch %s/%d: %v", tp, p.Partition, p.Error)
			}
			out[tp][p.Partition] = p.CommittedOffset
		}
	}
	return out
}

// waitCommitted waits until the group committed everything produced so far
// to the given input roles: every such message was handled.
func (e *testEnv) waitCommitted(timeout time.Duration, roles ...string) {
	e.t.Helper()
	topics := e.topicList(roles...)
	end := endOffsets(e.t, e.brokers, topics)
	var last map[string]map[int]int64
	ok := waitFor(timeout, func() bool {
		last = committed(e.t, e.brokers, e.group, topics)
		for tp, ps := range end {
			for p, off := range ps {
				if off > 0 && last[tp][p] < off {
					return false
				}
			}
		}
		return true
	})
	if !ok {
		e.t.Fatalf("group %s did not commit the end of %v within %s: end %v, committed %v", e.group, roles, timeout, end, last)
	}
}

// auditRec is one audit record with its Kafka key.
type auditRec struct {
	key string
	rec record.Audit
	raw []byte
}

// outputs reads the output topics back from the start, as an analyst's
// loader would, for as long as the test runs.
type outputs struct {
	mu       sync.Mutex
	audits   []auditRec
	confirms []record.Confirmation
	dlq      []record.DeadLetter
	bad      []string // records that did not parse
	seen     map[string]map[int]int64
	roles    map[string]string // topic → role
	eventIDs map[string]int    // audited event id → records
}

func (e *testEnv) startOutputs() *outputs {
	e.t.Helper()
	o := &outputs{seen: map[string]map[int]int64{}, roles: map[string]string{}, eventIDs: map[string]int{}}
	topics := e.topicList(roleDispatched, roleConfirmed, roleDLQ)
	for _, r := range []string{roleDispatched, roleConfirmed, roleDLQ} {
		o.roles[e.topics[r]] = r
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: e.brokers, GroupID: e.group + "-reader", GroupTopics: topics,
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond, CommitInterval: time.Second,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// A broker restart or a rebalance: the reader reconnects by
				// itself; stopping here would lose every later record.
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond): // pacing the retry, bounded by ctx
				}
				continue
			}
			o.add(m)
		}
	}()
	e.t.Cleanup(func() {
		cancel()
		<-done
		_ = r.Close()
	})
	return o
}

func (o *outputs) add(m kafka.Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen[m.Topic] == nil {
		o.seen[m.Topic] = map[int]int64{}
	}
	if cur, ok := o.seen[m.Topic][m.Partition]; !ok || m.Offset > cur {
		o.seen[m.Topic][m.Partition] = m.Offset
	}
	var err error
	switch o.roles[m.Topic] {
	case roleDispatched:
		var a record.Audit
		if err = json.Unmarshal(m.Value, &a); err == nil {
			o.audits = append(o.audits, auditRec{key: string(m.Key), rec: a, raw: m.Value})
			o.eventIDs[a.EventID]++
		}
	case roleConfirmed:
		var c record.Confirmation
		if err = json.Unmarshal(m.Value, &c); err == nil {
			o.confirms = append(o.confirms, c)
		}
	case roleDLQ:
		var d record.DeadLetter
		if err = json.Unmarshal(m.Value, &d); err == nil {
			o.dlq = append(o.dlq, d)
		}
	}
	if err != nil {
		o.bad = append(o.bad, fmt.Sprintf("%s/%d@%d: %v", m.Topic, m.Partition, m.Offset, err))
	}
}

// audited reports how many of ids have at least one audit record.
func (o *outputs) audited(ids []string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, id := range ids {
		if o.eventIDs[id] > 0 {
			n++
		}
	}
	return n
}

type outputSnapshot struct {
	audits   []auditRec
	confirms []record.Confirmation
	dlq      []record.DeadLetter
	bad      []string
}

func (o *outputs) snapshot() outputSnapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	return outputSnapshot{
		audits:   append([]auditRec(nil), o.audits...),
		confirms: append([]record.Confirmation(nil), o.confirms...),
		dlq:      append([]record.DeadLetter(nil), o.dlq...),
		bad:      append([]string(nil), o.bad...),
	}
}

// waitCaughtUp waits until the reader has read every output record written
// so far: call it once the members are stopped to judge the complete trail.
func (e *testEnv) waitCaughtUp(o *outputs, timeout time.Duration) {
	e.t.Helper()
	end := endOffsets(e.t, e.brokers, e.topicList(roleDispatched, roleConfirmed, roleDLQ))
	ok := waitFor(timeout, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		for tp, ps := range end {
			for p, off := range ps {
				if seen, ok := o.seen[tp][p]; off > 0 && (!ok || seen < off-1) {
					return false
				}
			}
		}
		return true
	})
	if !ok {
		e.t.Fatalf("output reader did not catch up within %s (end offsets %v)", timeout, end)
	}
}
