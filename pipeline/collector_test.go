package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/record"
)

// outputPartitions is the partition count of every test topic.
const outputPartitions = 4

// rawRecord is one output record as written.
type rawRecord struct {
	topic     string
	partition int
	offset    int64
	value     []byte
}

// collector reads the output topics from the start, one reader per
// partition (no consumer group: nothing to join, nothing committed), and
// keeps every record both raw and decoded.
type collector struct {
	brokers   []string
	topics    []string // dispatched, confirmed, dlq, in that order
	mu        sync.Mutex
	raw       []rawRecord
	audit     []record.Audit
	confirmed []record.Confirmation
	dead      []record.DeadLetter
	next      map[string]int64 // "topic/partition" → next offset to read
	errs      []error
}

func newCollector(brokers, topics []string) *collector {
	return &collector{brokers: brokers, topics: topics, next: map[string]int64{}}
}

func (c *collector) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, topic := range c.topics {
		for p := 0; p < outputPartitions; p++ {
			wg.Go(func() {
				r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.brokers, Topic: topic, Partition: p,
					MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
				defer r.Close()
				for {
					m, err := r.ReadMessage(ctx)
					if err != nil {
						return
					}
					c.add(topic, m)
				}
			})
		}
	}
	wg.Wait()
}

func (c *collector) add(topic string, m kafka.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw = append(c.raw, rawRecord{topic: topic, partition: m.Partition, offset: m.Offset, value: m.Value})
	c.next[fmt.Sprintf("%s/%d", topic, m.Partition)] = m.Offset + 1
	var err error
	switch topic {
	case c.topics[0]:
		var a record.Audit
		if err = json.Unmarshal(m.Value, &a); err == nil {
			c.audit = append(c.audit, a)
		}
	case c.topics[1]:
		var r record.Confirmation
		if err = json.Unmarshal(m.Value, &r); err == nil {
			c.confirmed = append(c.confirmed, r)
		}
	case c.topics[2]:
		var d record.DeadLetter
		if err = json.Unmarshal(m.Value, &d); err == nil {
			c.dead = append(c.dead, d)
		}
	}
	if err != nil {
		c.errs = append(c.errs, fmt.Errorf("%s/%d@%d: %w", topic, m.Partition, m.Offset, err))
	}
}

func (c *collector) audits(f func(record.Audit) bool) []record.Audit {
	return filtered(&c.mu, &c.audit, f)
}

func (c *collector) confirmations(f func(record.Confirmation) bool) []record.Confirmation {
	return filtered(&c.mu, &c.confirmed, f)
}

func (c *collector) deadLetters(f func(record.DeadLetter) bool) []record.DeadLetter {
	return filtered(&c.mu, &c.dead, f)
}

// filtered returns the records of *all that f keeps, reading *all under mu
// (the collector appends to it concurrently).
func filtered[T any](mu *sync.Mutex, all *[]T, f func(T) bool) []T {
	mu.Lock()
	defer mu.Unlock()
	var out []T
	for _, r := range *all {
		if f(r) {
			out = append(out, r)
		}
	}
	return out
}

func (c *collector) rawRecords() []rawRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]rawRecord(nil), c.raw...)
}

// waitCaughtUp waits until every output partition has been read up to its
// end offset as of now, and fails on records that did not decode.
func (c *collector) waitCaughtUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	end := map[string]int64{}
	for _, topic := range c.topics {
		for p := 0; p < outputPartitions; p++ {
			conn, err := kafka.DialLeader(ctx, "tcp", c.brokers[0], topic, p)
			if err != nil {
				t.Errorf("dial leader of %s/%d: %v", topic, p, err)
				return
			}
			last, err := conn.ReadLastOffset()
			_ = conn.Close()
			if err != nil {
				t.Errorf("last offset of %s/%d: %v", topic, p, err)
				return
			}
			end[fmt.Sprintf("%s/%d", topic, p)] = last
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		behind := ""
		for k, last := range end {
			if c.next[k] < last {
				behind = fmt.Sprintf("%s at %d of %d", k, c.next[k], last)
				break
			}
		}
		errs := c.errs
		c.mu.Unlock()
		if behind == "" {
			for _, err := range errs {
				t.Errorf("output record does not decode: %v", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("collector still behind after %s: %s", timeout, behind)
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a deadline-bounded wait
	}
}

// readInput reads the message at partition/offset of an input topic, to
// check a DLQ record's source coordinates.
func readInput(t *testing.T, brokers []string, topic string, partition int, offset int64) kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: partition, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(offset); err != nil {
		t.Fatalf("seek %s/%d@%d: %v", topic, partition, offset, err)
	}
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatalf("read %s/%d@%d: %v", topic, partition, offset, err)
	}
	return m
}
