package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/consumer"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/event"
)

// Attribution: which partner an event's postbacks go to, and with which
// params. The rules (dedupe.Attribute holds them in one Redis script):
//
//   - every event that names a network or carries params contributes to its
//     click's context, whichever topic it came on; the first network is the
//     click's partner for good, params accumulate key by key (first value
//     kept), and an event that carries nothing changes nothing;
//   - an event is routed by its own network, else the click's, else (when
//     its merchant lets it wait and the click has no registration yet) it
//     waits for the click's network or registration, else the merchant's
//     default partner, else it goes to the DLQ (no_route);
//   - an FTD keeps the route it was sent with (in its Redis record), and its
//     status change goes there (route "conversion");
//   - a redelivered event is routed as the first time (a route memo per
//     event id), so its postback ids, which name the partner, do not change.
//
// Waiting: a deposit or revenue event of a click with neither a network nor
// a registration is stored in Redis (never held in memory, never blocking
// its partition: its offset commits) and handed back by the attribution of
// the click's next event that brings either; that event's unit handles it
// after itself.
// A deadline job on the delayed path routes it by default if nothing came
// within the merchant's attribution_wait. Either way its outcome is
// audited, and only then is it marked finished.

// route is where an event's postbacks go: the partner, how it was chosen,
// and the params to render.
type route struct {
	partner string
	via     dedupe.RouteVia
	params  map[string]string
	// clickNetwork is the click's partner when the event named another one.
	clickNetwork string
}

func routeOf(r dedupe.Route) route {
	return route{partner: r.Partner, via: r.Via, params: r.Params}
}

// waitingMessage is what a waiting event stores: its source message, so it
// is handled exactly as if it were consumed again.
type waitingMessage struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Key       []byte `json:"key,omitempty"`
	Value     []byte `json:"value"`
	// WaitUntil is when its deadline job routes it by default.
	WaitUntil time.Time `json:"wait_until"`
}

func (w waitingMessage) message() consumer.Message {
	return consumer.Message{Topic: w.Topic, Partition: w.Partition, Offset: w.Offset, Key: w.Key, Value: w.Value}
}

// routeEvent attributes ev (see dedupe.Attribute) and routes it. ok is false
// when the event is done without a route: it waits for its click's network
// (stored, its deadline scheduled) or it was dead-lettered (no route at
// all). A partner that is not configured is errUnknownPartner.
func (p *Pipeline) routeEvent(ctx context.Context, ev event.Event, merchant config.Merchant, u *unit) (rt route, ok bool, err error) {
	a, err := p.attribute(ctx, ev, merchant, u)
	if err != nil {
		return route{}, false, err
	}
	env := ev.Common()
	switch a.State {
	case dedupe.StateWaiting:
		p.metrics.AttributionWaits.WithLabelValues("waiting").Inc()
		return route{}, false, nil
	case dedupe.StateUnroutable:
		p.deadLetterEvent(&u.out, u.msg, u.src, ev, "no_route",
			fmt.Sprintf("click %q has no network, the event names none and merchant %q has no default_partner", env.ClickID, env.MerchantID))
		return route{}, false, nil
	}
	rt = routeOf(a.Route)
	if rt.via == dedupe.RouteEvent && a.Click.Network != rt.partner {
		rt.clickNetwork = a.Click.Network
	}
	if _, known := p.cfg.Partners[rt.partner]; !known {
		return route{}, false, fmt.Errorf("%w %q", errUnknownPartner, rt.partner)
	}
	return rt, true, nil
}

// attribute calls the store for ev: its contribution to the click, and the
// wait it is allowed. A waiting event gets its deadline job here, due from
// now (a redelivery moves it later, never earlier: waiting longer is safe).
func (p *Pipeline) attribute(ctx context.Context, ev event.Event, merchant config.Merchant, u *unit) (dedupe.Attribution, error) {
	env := ev.Common()
	t := dedupe.Touch{
		ClickID: env.ClickID, EventID: env.EventID, MerchantID: env.MerchantID,
		Network: env.Network, Params: env.Params, DefaultPartner: merchant.DefaultPartner,
		Release: u.release, At: p.now(),
	}
	_, t.Registers = ev.(*event.Registration)
	var w waitingMessage
	if wait := merchant.Wait(); wait > 0 && !u.noWait && canWait(ev) {
		w = waitingMessage{Topic: u.msg.Topic, Partition: u.msg.Partition, Offset: u.msg.Offset,
			Key: u.msg.Key, Value: u.msg.Value, WaitUntil: p.now().Add(wait)}
		// Built only if the event is to wait: most events find their
		// click's network, and the payload carries the whole message.
		t.Wait = func() ([]byte, error) {
			b, err := json.Marshal(w)
			if err != nil {
				return nil, fmt.Errorf("marshal waiting event: %w", err)
			}
			return b, nil
		}
	}
	a, err := p.store.Attribute(ctx, t)
	if err != nil {
		return a, err
	}
	if len(a.Released) > 0 && canWait(ev) {
		// Events of the click that waited and were consumed before this one
		// (its partition, lower offsets) come first: a deposit among them
		// may be the FTD. Those after it (this event is a redelivery of one
		// that waited too) come after it, with the rest. Others (a
		// registration's own postback) go first and release after.
		var before []dedupe.WaitingEvent
		for _, w := range a.Released {
			if consumedBefore(w, u.msg) {
				before = append(before, w)
			} else {
				u.released = append(u.released, w)
			}
		}
		later := u.released
		u.released = before
		if err := p.handleReleased(ctx, u); err != nil {
			return a, err
		}
		u.released = later
	} else {
		u.released = append(u.released, a.Released...)
	}
	if a.State == dedupe.StateWaiting {
		err = p.schedule(ctx, attributionJobID(env.ClickID, env.EventID), w.WaitUntil,
			job{Kind: jobAttributionDeadline, ClickID: env.ClickID, EventID: env.EventID, Waiting: &w})
	}
	return a, err
}

// canWait: only deposits and revenue wait for a network. A registration is
// what they wait for (and a trial comes on its topic, in order after it);
// a qualification is routed by its FTD.
func canWait(ev event.Event) bool {
	switch ev.(type) {
	case *event.Deposit, *event.Revenue:
		return true
	}
	return false
}

// handleReleased handles the waiting events u's attribution handed over,
// each as if consumed again (its own source coordinates), into u's outputs,
// in the order they were consumed (see inOrder). They are marked finished
// after u's records are written (finishWaits).
func (p *Pipeline) handleReleased(ctx context.Context, u *unit) error {
	released := u.released
	u.released = nil
	for _, w := range p.inOrder(released) {
		if err := p.handleWaiting(ctx, u, w); err != nil {
			return err
		}
		p.metrics.AttributionWaits.WithLabelValues("released").Inc()
	}
	return nil
}

// handleWaiting handles one waiting event into u's outputs and marks it to
// be finished once they are written.
func (p *Pipeline) handleWaiting(ctx context.Context, u *unit, w decodedWait) error {
	r := &unit{msg: w.msg.message(), src: event.Source{Topic: w.msg.Topic, Partition: w.msg.Partition, Offset: w.msg.Offset}, noWait: true}
	r.out = u.out
	if _, err := p.handle(ctx, r); err != nil {
		return err
	}
	u.out = r.out
	u.out.finished = append(u.out.finished, finishedWait{clickID: u.clickID, eventID: w.eventID})
	return nil
}

// consumedBefore reports whether the waiting event w came before m in m's
// partition. One that does not decode counts as after (it is skipped, left
// to its deadline, either way).
func consumedBefore(w dedupe.WaitingEvent, m consumer.Message) bool {
	var wm waitingMessage
	if json.Unmarshal(w.Payload, &wm) != nil {
		return false
	}
	return wm.Topic == m.Topic && wm.Partition == m.Partition && wm.Offset < m.Offset
}

// decodedWait is a waiting event read back.
type decodedWait struct {
	eventID string
	msg     waitingMessage
}

// inOrder decodes waiting events and sorts them as they were consumed
// (topic, partition, offset): a click's deposits share a partition, so the
// first one consumed is classified first and is the FTD, as if none had
// waited. One that does not decode (corrupted) is left to its deadline job,
// which holds its own copy.
func (p *Pipeline) inOrder(ws []dedupe.WaitingEvent) []decodedWait {
	out := make([]decodedWait, 0, len(ws))
	for _, w := range ws {
		var m waitingMessage
		if err := json.Unmarshal(w.Payload, &m); err != nil {
			p.log.Error("waiting event unreadable; left to its deadline", zap.String("event_id", w.EventID), zap.Error(err))
			continue
		}
		out = append(out, decodedWait{eventID: w.EventID, msg: m})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].msg, out[j].msg
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
	return out
}

// finishWaits marks the waiting events whose outcome was just written as
// finished. A failure is only logged: the event stays waiting, and the
// click's next attribution or its deadline handles it again, which repeats
// no send (claims) and only re-emits its audit record.
func (p *Pipeline) finishWaits(ctx context.Context, out *outputs) {
	for _, f := range out.finished {
		if err := p.store.FinishWaiting(ctx, f.clickID, f.eventID); err != nil {
			p.log.Warn("mark waiting event finished", zap.String("click_id", f.clickID), zap.String("event_id", f.eventID), zap.Error(err))
		}
	}
}

func attributionJobID(clickID, eventID string) string { return "aw:" + clickID + ":" + eventID }

// runAttributionDeadline routes a waiting event whose window has passed
// without a network or registration for its click, unless it was released
// already. It handles every event of the click that still waits, in the
// order they were consumed, not only its own: the deadline jobs of one
// click's deposits run concurrently, and the first deposit must be
// classified first. (Two jobs handling the same events send nothing twice:
// the claims see to it.) If Redis forgot the job's own event (its record
// lapsed) it is handled all the same from the job's copy: a lapsed wait
// leaves a trace rather than nothing.
func (p *Pipeline) runAttributionDeadline(ctx context.Context, j job, out *outputs) error {
	if j.Waiting == nil {
		return fmt.Errorf("attribution job for %s has no event", j.EventID)
	}
	state, err := p.store.Waiting(ctx, j.ClickID, j.EventID)
	if err != nil || state == dedupe.WaitFinished {
		return err
	}
	pending, err := p.store.PendingWaits(ctx, j.ClickID)
	if err != nil {
		return err
	}
	if state == dedupe.WaitMissing {
		p.log.Warn("waiting event's record lapsed; handling it from its deadline job",
			zap.String("click_id", j.ClickID), zap.String("event_id", j.EventID))
		own, err := json.Marshal(j.Waiting)
		if err != nil {
			return fmt.Errorf("marshal waiting event: %w", err)
		}
		pending = append(pending, dedupe.WaitingEvent{EventID: j.EventID, Payload: own})
	}
	u := &unit{clickID: j.ClickID, out: *out}
	for _, w := range p.inOrder(pending) {
		if err := p.handleWaiting(ctx, u, w); err != nil {
			return err
		}
		p.metrics.AttributionWaits.WithLabelValues("deadline").Inc()
	}
	*out = u.out
	return nil
}
