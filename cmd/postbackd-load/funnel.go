package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/config"
)

// Merchants of the load configuration.
const (
	// merchantDeposits is the merchant of the deposit-only streams: no
	// registrations ever come, so it waits for none (attribution_wait 0).
	merchantDeposits = "m1"
	// merchantCPA and merchantHybrid are the mixed stream's: every click
	// registers first (naming its network), so they keep the default
	// attribution_wait, as in production.
	merchantCPA    = "mc"
	merchantHybrid = "mh"
)

// funnelMix is the mixed stream's shape, per click: one registration, one
// FTD and repeatDeposits repeat deposits (0 to 4, two on average), a
// revenue event for clicks of the hybrid merchant (every other click), and
// one qualification of the FTD (one in ten rejected). Each makes one
// postback: reg, ftd, rdep, revshare, ftd_status.
//
// The stream comes in two shapes (funnelShape). In production a click's
// stages come minutes to days apart, so postbackd at any moment reads
// registrations of new clicks, deposits of clicks registered before and
// qualifications of FTDs delivered long ago: the steady shape. Produced all
// at once (the cold shape), a click's four events are on four topics that
// postbackd reads concurrently, so they race: deposits read before their
// registration wait for it and are handled twice, and qualifications read
// before their FTD was delivered park until it is.
type funnelMix struct {
	clicks int
	shape  funnelShape
}

// funnelShape is how a mixed stream's clicks relate to its events.
type funnelShape int

const (
	// shapeCold: every stage of every click in the stream, produced at
	// once (the clicks are new).
	shapeCold funnelShape = iota
	// shapeSteady: four cohorts of f.clicks clicks, cohort k at stage k of
	// its life (funnelStage). The earlier stages of the cohorts are their
	// history, consumed a stage at a time before the measured stream is
	// produced; the stream holds stage k of cohort k: every kind of event
	// in the cold shape's numbers, none ahead of its click's earlier
	// stages.
	shapeSteady
)

func (s funnelShape) String() string {
	if s == shapeSteady {
		return "steady"
	}
	return "cold"
}

// describe says what the shape's stream holds, for the table and -help.
func (s funnelShape) describe() string {
	if s == shapeSteady {
		return "clicks at every stage of their life, their history consumed first"
	}
	return "every stage of every click at once, the topics racing"
}

// tag is the shape's letter in the phase's name and its clicks' ids, so
// that the two shapes of one run never share topics, keys or ids.
func (s funnelShape) tag() string { return s.String()[:1] }

// funnelStage is a stage of a click's life: the events that come together.
type funnelStage int

const (
	stageRegistration funnelStage = iota
	stageFTD
	stageRepeats // repeat deposits and revenue
	stageQualification
	funnelStages = 4
)

// The pattern of a click's events follows its index within its cohort (j),
// so that every cohort of the steady shape, and the cold shape's one,
// holds the same events for the same number of clicks.
func repeatDeposits(j int) int { return j % 5 }

func hybrid(j int) bool { return j%2 == 1 }

func rejected(j int) bool { return j%10 == 9 }

// funnelCounts is what a mixed stream holds.
type funnelCounts struct {
	registrations, deposits, revenue, qualifications int
}

func (c funnelCounts) events() int {
	return c.registrations + c.deposits + c.revenue + c.qualifications
}

// postbacks is how many postbacks the stream makes: one per event.
func (c funnelCounts) postbacks() int { return c.events() }

// funnelStream selects the events of one stream of a funnel, by the
// cohort of their click and their stage.
type funnelStream func(cohort, s funnelStage) bool

// measured is the stream the harness measures: every stage of the cold
// shape's clicks, the current stage of each steady cohort.
func (f funnelMix) measured() funnelStream {
	if f.shape == shapeCold {
		return func(funnelStage, funnelStage) bool { return true }
	}
	return func(cohort, s funnelStage) bool { return s == cohort }
}

// history is stage s of the steady cohorts past it, consumed before stage
// s+1 and the measured stream (nothing for the cold shape).
func (f funnelMix) history(s funnelStage) funnelStream {
	return func(cohort, st funnelStage) bool { return f.shape == shapeSteady && st == s && s < cohort }
}

// clickStages calls fn with each click (its index i over all cohorts) and
// stage that stream holds, in the order they are produced.
func (f funnelMix) clickStages(stream funnelStream, fn func(i int, s funnelStage)) {
	cohorts := 1
	if f.shape == shapeSteady {
		cohorts = funnelStages
	}
	for i := range f.clicks * cohorts {
		for s := range funnelStage(funnelStages) {
			if stream(funnelStage(i/f.clicks), s) {
				fn(i, s)
			}
		}
	}
}

// counts is what stream holds.
func (f funnelMix) counts(stream funnelStream) funnelCounts {
	var c funnelCounts
	f.clickStages(stream, func(i int, s funnelStage) {
		j := i % f.clicks
		switch s {
		case stageRegistration:
			c.registrations++
		case stageFTD:
			c.deposits++
		case stageRepeats:
			c.deposits += repeatDeposits(j)
			if hybrid(j) {
				c.revenue++
			}
		case stageQualification:
			c.qualifications++
		}
	})
	return c
}

// messages calls emit with the events of click i's stage s, in the order a
// funnel produces them: registration, FTD, repeat deposits, revenue,
// qualification. Times start at base and advance a second per event, as if
// every stage were produced.
func (f funnelMix) messages(run string, i int, s funnelStage, base time.Time, topics config.Topics, emit func(kafka.Message)) {
	click := fmt.Sprintf("mix%s%s-%07d", f.shape.tag(), run, i)
	j := i % f.clicks
	merchant := merchantCPA
	if hybrid(j) {
		merchant = merchantHybrid
	}
	at := base
	next := func() string { at = at.Add(time.Second); return at.Format(time.RFC3339) }
	put := func(stage funnelStage, topic string, v map[string]any) {
		if stage != s {
			return
		}
		b, _ := json.Marshal(v)
		emit(kafka.Message{Topic: topic, Key: []byte(click), Value: b})
	}
	put(stageRegistration, topics.Registrations, map[string]any{
		"event_id": "reg-" + click, "occurred_at": next(), "merchant_id": merchant, "click_id": click,
		"kind": "registration", "network": "net", "player_id": "p" + click,
		"params": map[string]any{"offer_id": "o-7", "custom2": "sub-" + click[len(click)-3:]},
	})
	for d := 0; d <= repeatDeposits(j); d++ {
		stage := stageRepeats
		if d == 0 {
			stage = stageFTD
		}
		put(stage, topics.Deposits, map[string]any{
			"event_id": fmt.Sprintf("dep-%s-%d", click, d), "occurred_at": next(), "merchant_id": merchant, "click_id": click,
			"amount": fmt.Sprintf("%d.%02d", 10+(i+d)%90, (i*7+d)%100), "currency": "EUR", "status": "succeeded",
			"player_id": "p" + click, "payment_method": "card",
		})
	}
	if hybrid(j) {
		put(stageRepeats, topics.Revenue, map[string]any{
			"event_id": "rev-" + click, "occurred_at": next(), "merchant_id": merchant, "click_id": click,
			"amount": fmt.Sprintf("%d.%02d", 1+i%40, i%100), "currency": "EUR", "player_id": "p" + click,
		})
	}
	status := "approved"
	if rejected(j) {
		status = "rejected"
	}
	put(stageQualification, topics.Qualifications, map[string]any{
		"event_id": "qual-" + click, "occurred_at": next(), "merchant_id": merchant, "click_id": click,
		"status": status, "reason": "kyc",
	})
}

// produceFunnel writes the events of f that stream holds to their topics.
// Every call gives a click's events the same times: the base is per run.
func produceFunnel(ctx context.Context, brokers []string, run string, f funnelMix, stream funnelStream, base time.Time, topics config.Topics) error {
	return produce(ctx, brokers, "", func(emit func(kafka.Message)) {
		f.clickStages(stream, func(i int, s funnelStage) {
			f.messages(run, i, s, base.Add(time.Duration(i)*time.Millisecond), topics, emit)
		})
	})
}

// produceDeposits writes n deposits of merchant m1 over clicks clicks to
// topic; click and event ids carry tag, so streams of one run never share
// them.
func produceDeposits(ctx context.Context, brokers []string, topic, tag string, n, clicks int) error {
	base := time.Now().UTC().Add(-time.Hour)
	return produce(ctx, brokers, topic, func(emit func(kafka.Message)) {
		for i := range n {
			emit(depositMessage(tag, i, clicks, base))
		}
	})
}

// depositMessage is deposit i of a deposit-only stream: clicks take turns,
// so a click's first deposit is its FTD and the later ones are repeats.
func depositMessage(tag string, i, clicks int, base time.Time) kafka.Message {
	click := fmt.Sprintf("%s-click-%07d", tag, i%clicks)
	v, _ := json.Marshal(map[string]any{
		"event_id": fmt.Sprintf("%s-dep-%08d", tag, i), "occurred_at": base.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339),
		"merchant_id": merchantDeposits, "click_id": click, "amount": fmt.Sprintf("%d.%02d", 10+i%90, i%100), "currency": "USD",
		"status": "succeeded", "player_id": "p" + click, "payment_method": "card",
	})
	return kafka.Message{Key: []byte(click), Value: v}
}

// produce writes what gen emits, in batches of 2000, keyed by click (each
// message names its topic when topic is "").
func produce(ctx context.Context, brokers []string, topic string, gen func(emit func(kafka.Message))) error {
	wr := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchSize: 2000, BatchTimeout: 5 * time.Millisecond}
	defer wr.Close()
	batch := make([]kafka.Message, 0, 2000)
	var err error
	flush := func() {
		if err == nil && len(batch) > 0 {
			err = writeRetry(ctx, wr, batch)
		}
		batch = batch[:0]
	}
	gen(func(m kafka.Message) {
		if err != nil {
			return
		}
		batch = append(batch, m)
		if len(batch) == cap(batch) {
			flush()
		}
	})
	flush()
	return err
}

// newTopicWait bounds how long a write to a topic created moments ago is
// retried while its partitions' leaders are elected.
const newTopicWait = 30 * time.Second

// writeRetry writes msgs, retrying the messages that failed while the
// broker did not know the topic or its partitions had no leader yet (a
// topic just created).
func writeRetry(ctx context.Context, wr *kafka.Writer, msgs []kafka.Message) error {
	deadline := time.Now().Add(newTopicWait)
	for {
		err := wr.WriteMessages(ctx, msgs...)
		if err == nil || !newTopicError(err) || time.Now().After(deadline) {
			return err
		}
		var we kafka.WriteErrors
		if errors.As(err, &we) && len(we) == len(msgs) {
			var again []kafka.Message
			for i, e := range we {
				if e != nil {
					again = append(again, msgs[i])
				}
			}
			msgs = again
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func newTopicError(err error) bool {
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && !newTopicError(e) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, kafka.UnknownTopicOrPartition) || errors.Is(err, kafka.LeaderNotAvailable) || errors.Is(err, kafka.NotLeaderForPartition)
}
