package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/consumer"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/dispatcher"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/metrics"
	"github.com/postbackd/postbackd/postback"
)

// Writer writes records to Kafka. *kafka.Writer satisfies it when configured
// with RequiredAcks = RequireAll and no fixed Topic (every message names its
// own). WriteMessages must return only once every message is acknowledged.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Sender sends a postback to its partner; *dispatcher.Dispatcher is the
// implementation.
type Sender interface {
	HasGoal(partner string, goal postback.Goal) bool
	Render(p postback.Postback) (dispatcher.Rendered, error)
	Send(ctx context.Context, p postback.Postback) dispatcher.Result
	NextDelay(partner string, attempts int) time.Duration
	MaxAge(partner string) time.Duration
}

var _ Sender = (*dispatcher.Dispatcher)(nil)
var _ Writer = (*kafka.Writer)(nil)
var _ consumer.Handler = (*Pipeline)(nil)

// Config is what the pipeline needs from the service configuration.
type Config struct {
	Topics    config.Topics
	Merchants map[string]config.Merchant
	Partners  map[string]config.Partner
	// QualificationWindow is how long a qualification waits for its deposit.
	QualificationWindow time.Duration
	Delayed             config.Delayed
	// DrainTimeout bounds how long a stop lets delayed-path jobs in flight
	// finish (the consumer drains input events with the same bound).
	DrainTimeout time.Duration
}

// Pipeline handles input events. It is safe for concurrent use; the consumer
// guarantees one click's events are not handled concurrently.
type Pipeline struct {
	cfg     Config
	store   *batchedStore
	sender  Sender
	out     Writer
	decoder *event.Decoder
	log     *zap.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	kinds   map[string]event.Kind // topic → kind
	// accepted: postbacks accepted by their partner, not yet marked.
	accepted *acceptedSet
	// failures counts permanent failures of input messages.
	failures failureCounts
}

// Options are the pipeline's collaborators.
type Options struct {
	Store   Store
	Sender  Sender
	Out     Writer
	Decoder *event.Decoder
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	Now     func() time.Time // default time.Now
}

// New builds a pipeline.
func New(cfg Config, o Options) (*Pipeline, error) {
	if o.Store == nil || o.Sender == nil || o.Out == nil || o.Decoder == nil {
		return nil, errors.New("pipeline: store, sender, writer and decoder are required")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New(nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if cfg.QualificationWindow <= 0 {
		cfg.QualificationWindow = 24 * time.Hour
	}
	return &Pipeline{
		cfg: cfg, store: newBatchedStore(o.Store), sender: o.Sender, out: o.Out, decoder: o.Decoder,
		log: o.Logger, metrics: o.Metrics, now: o.Now, accepted: newAcceptedSet(),
		kinds: map[string]event.Kind{
			cfg.Topics.Deposits:       event.KindDeposit,
			cfg.Topics.Revenue:        event.KindRevenue,
			cfg.Topics.Registrations:  event.KindRegistration,
			cfg.Topics.Qualifications: event.KindQualification,
		},
	}, nil
}

// Close releases the pipeline's batching goroutines. Call it after the
// consumer and RunDelayed have returned; safe to call twice. Accepted
// postbacks whose mark is still being retried (Redis away through the whole
// drain) are named in the log: this process's memory of them ends here, and
// a redelivery will send them again (the partner's transaction_id drops it).
func (p *Pipeline) Close() {
	if n := p.accepted.len(); n > 0 {
		p.log.Error("stopping with accepted postbacks whose delivered mark never reached Redis; their events will send them again",
			zap.Int("postbacks", n))
	}
	p.store.close()
}

// InputTopics lists the topics Handle understands.
func (p *Pipeline) InputTopics() []string {
	t := p.cfg.Topics
	return []string{t.Deposits, t.Revenue, t.Registrations, t.Qualifications}
}

// outputs collects the records one unit of work must write before it is done,
// and the waiting events it handled, to be marked finished once those
// records are written.
type outputs struct {
	msgs     []kafka.Message
	finished []finishedWait
}

// finishedWait is a waiting event whose outcome the unit's records hold.
type finishedWait struct{ clickID, eventID string }

// appendJSONer is a record with a reflection-free encoder that writes exactly
// json.Marshal's bytes (record.Audit and record.Confirmation: one per event).
type appendJSONer interface{ AppendJSON([]byte) []byte }

func (o *outputs) add(topic, key string, v any) {
	if r, ok := v.(appendJSONer); ok {
		o.msgs = append(o.msgs, kafka.Message{Topic: topic, Key: []byte(key), Value: r.AppendJSON(nil)})
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		// Records are plain structs of strings, numbers and times: a marshal
		// error is a programming error.
		panic(fmt.Sprintf("pipeline: marshal %T: %v", v, err))
	}
	o.msgs = append(o.msgs, kafka.Message{Topic: topic, Key: []byte(key), Value: b})
}

func (p *Pipeline) flush(ctx context.Context, o *outputs) error {
	if len(o.msgs) == 0 {
		return nil
	}
	if err := p.out.WriteMessages(ctx, o.msgs...); err != nil {
		return fmt.Errorf("write %d output records: %w", len(o.msgs), err)
	}
	return nil
}

// Handle implements consumer.Handler: see the package documentation for what
// a nil error promises.
func (p *Pipeline) Handle(ctx context.Context, m consumer.Message) error {
	u := &unit{msg: m, src: event.Source{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}, release: true}
	result, err := p.handle(ctx, u)
	if err == nil {
		err = p.handleReleased(ctx, u)
	}
	if err == nil {
		err = p.flush(ctx, &u.out)
	}
	key := failureKey{m.Topic, m.Partition, m.Offset}
	if err != nil && permanent(err) && p.failures.add(key) >= maxPermanentTries {
		// Nothing of this attempt's outputs is written: the event goes to
		// the DLQ whole, with the reason, for an operator to repair and
		// replay, and its offset may commit. A delivered postback of it
		// stays delivered (Redis remembers), so a replay sends nothing twice.
		p.failures.forget(key)
		u.out = outputs{}
		p.log.Error("event fails permanently; dead-lettered", zap.String("topic", m.Topic), zap.Int("partition", m.Partition),
			zap.Int64("offset", m.Offset), zap.Int("tries", maxPermanentTries), zap.Error(err))
		p.deadLetterInput(&u.out, m, u.src, p.kinds[m.Topic], "", "", reasonUnprocessable, err.Error())
		if err = p.flush(ctx, &u.out); err == nil {
			p.metrics.EventsConsumed.WithLabelValues(m.Topic, "invalid").Inc()
			return nil
		}
	}
	if err != nil {
		p.metrics.EventsConsumed.WithLabelValues(m.Topic, "retried").Inc()
		return err
	}
	p.failures.forget(key)
	p.finishWaits(ctx, &u.out)
	p.metrics.EventsConsumed.WithLabelValues(m.Topic, result).Inc()
	return nil
}

// reasonUnprocessable: an event whose handling failed permanently
// maxPermanentTries times (see permanent).
const reasonUnprocessable = "unprocessable"

// failureKey names one input message.
type failureKey struct {
	topic     string
	partition int
	offset    int64
}

// failureCounts counts permanent failures per input message in this
// process. It is bounded: past maxTracked entries (messages given up on by
// a rebalance, say) it starts over, which only delays a dead letter.
type failureCounts struct {
	mu sync.Mutex
	m  map[failureKey]int
}

const maxTracked = 10000

func (f *failureCounts) add(k failureKey) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil || len(f.m) >= maxTracked {
		f.m = make(map[failureKey]int)
	}
	f.m[k]++
	return f.m[k]
}

func (f *failureCounts) forget(k failureKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, k)
}

// unit is one input event being handled, and what it may do.
type unit struct {
	msg consumer.Message
	src event.Source
	out outputs
	// release: hand over the events of the click that wait for its network
	// (see attribution.go) once it has one. Off for events that are
	// themselves released, so that one release never nests in another.
	release bool
	// noWait: the event may not wait for its click's network, whatever its
	// merchant says (it waited already).
	noWait bool
	// clickID is the event's click, once decoded.
	clickID string
	// released are the waiting events of the click that this one's
	// attribution handed over.
	released []dedupe.WaitingEvent
}

func (p *Pipeline) handle(ctx context.Context, u *unit) (string, error) {
	m, src, out := u.msg, u.src, &u.out
	kind, ok := p.kinds[m.Topic]
	if !ok {
		p.deadLetterInput(out, m, src, "", "", "", "unknown_topic", fmt.Sprintf("topic %q is not an input topic", m.Topic))
		return "invalid", nil
	}
	ev, err := p.decoder.Decode(kind, m.Value)
	if err != nil {
		reason, eventID, clickID := "undecodable", "", ""
		var inv *event.InvalidError
		if errors.As(err, &inv) {
			reason, eventID, clickID = inv.Reason, inv.EventID, inv.ClickID
		}
		p.deadLetterInput(out, m, src, kind, eventID, clickID, reason, err.Error())
		return "invalid", nil
	}
	env := ev.Common()
	u.clickID = env.ClickID
	merchant, ok := p.cfg.Merchants[env.MerchantID]
	if !ok {
		p.deadLetterEvent(out, m, src, ev, "unknown_merchant", fmt.Sprintf("merchant %q is not configured", env.MerchantID))
		return "invalid", nil
	}
	if _, ok := p.cfg.Partners[env.Network]; env.Network != "" && !ok {
		// Before anything reaches Redis: a network that is not a partner must
		// never become a click's partner.
		p.deadLetterEvent(out, m, src, ev, "unknown_partner", fmt.Sprintf("%v %q", errUnknownPartner, env.Network))
		return "invalid", nil
	}
	switch e := ev.(type) {
	case *event.Deposit:
		err = p.handleDeposit(ctx, e, merchant, u)
	case *event.Revenue:
		err = p.handleRevenue(ctx, e, merchant, u)
	case *event.Registration:
		err = p.handleRegistration(ctx, e, merchant, u)
	case *event.Qualification:
		err = p.handleQualification(ctx, e, merchant, u)
	default:
		err = fmt.Errorf("pipeline: unhandled event type %T", ev)
	}
	if errors.Is(err, errUnknownPartner) {
		p.deadLetterEvent(out, m, src, ev, "unknown_partner", err.Error())
		return "invalid", nil
	}
	return "ok", err
}

var errUnknownPartner = errors.New("unknown partner")

// errUnreadable: state the pipeline stored (a parked qualification's
// payload, an FTD record's amount) cannot be read back. Retrying cannot help
// (see permanent).
var errUnreadable = errors.New("stored state cannot be read")

// permanent tells an error that retrying cannot cure — stored state that
// cannot be read, or that Redis refuses to work on (dedupe.IsCorrupt) —
// from a transient one: Redis or Kafka unavailable, timeouts, a stop.
// Transient errors are retried for as long as they last (fail closed: the
// click waits); a permanent one is retried maxPermanentTries times, in
// case it was not, and then dead-lettered with its reason.
func permanent(err error) bool {
	return errors.Is(err, errUnreadable) || dedupe.IsCorrupt(err)
}

// maxPermanentTries is how many times an event whose handling fails
// permanently is tried before it goes to the DLQ (reason unprocessable).
const maxPermanentTries = 3

// newPostback fills what every postback of an event shares.
func (p *Pipeline) newPostback(rt route, goal postback.Goal, status string, env *event.Envelope, src event.Source) postback.Postback {
	return postback.Postback{
		ID:           postback.NewID(rt.partner, goal, env.EventID, status),
		Partner:      rt.partner,
		Route:        string(rt.via),
		ClickNetwork: rt.clickNetwork,
		Goal:         goal,
		Status:       status,
		Merchant:     env.MerchantID,
		ClickID:      env.ClickID,
		EventID:      env.EventID,
		Params:       rt.params,
		Source:       src,
		OccurredAt:   env.OccurredAt,
		CreatedAt:    p.now(),
	}
}
