package pipeline

import (
	"time"
	"unicode/utf8"

	"github.com/postbackd/postbackd/consumer"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/dispatcher"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/internal/decimalfmt"
	"github.com/postbackd/postbackd/postback"
	"github.com/postbackd/postbackd/record"
)

// kindOfGoal names the input kind a goal's postbacks come from.
func kindOfGoal(g postback.Goal) event.Kind {
	switch g {
	case postback.GoalFTD, postback.GoalRD:
		return event.KindDeposit
	case postback.GoalFTDStatus:
		return event.KindQualification
	case postback.GoalRevshare:
		return event.KindRevenue
	default:
		return event.KindRegistration
	}
}

func (p *Pipeline) basePostbackAudit(pb postback.Postback, outcome record.Outcome, reason string) record.Audit {
	a := record.Audit{
		SchemaVersion: record.SchemaVersion,
		PostbackID:    pb.ID,
		EventID:       pb.EventID,
		EventKind:     kindOfGoal(pb.Goal),
		Source:        pb.Source,
		MerchantID:    pb.Merchant,
		ClickID:       pb.ClickID,
		Network:       pb.Partner,
		Route:         pb.Route,
		ClickNetwork:  pb.ClickNetwork,
		Goal:          string(pb.Goal),
		Status:        pb.Status,
		Currency:      pb.Currency,
		Outcome:       outcome,
		Reason:        reason,
		Attempts:      pb.Attempts,
		RecordedAt:    p.now().UTC(),
	}
	if pb.HasAmount {
		a.Amount = decimalfmt.String(pb.Amount)
	}
	if !pb.CreatedAt.IsZero() {
		t := pb.CreatedAt.UTC()
		a.FirstAttempt = &t
	}
	if !pb.OccurredAt.IsZero() {
		t := pb.OccurredAt.UTC()
		a.OccurredAt = &t
	}
	if len(pb.Params) > 0 {
		a.Params = pb.Params
	}
	return a
}

// auditPostback records an outcome that involved no HTTP attempt now.
func (p *Pipeline) auditPostback(out *outputs, pb postback.Postback, outcome record.Outcome, reason string, next *time.Time) {
	a := p.basePostbackAudit(pb, outcome, reason)
	if r, err := p.sender.Render(pb); err == nil {
		a.URL = r.Redacted
	}
	a.NextAttemptAt = next
	p.emitAudit(out, a)
}

// auditAttempt records the outcome of a Send.
func (p *Pipeline) auditAttempt(out *outputs, pb postback.Postback, outcome record.Outcome, reason string, res dispatcher.Result, next *time.Time) {
	// Send rendered the URL already (Result.URL, redacted): no second render.
	a := p.basePostbackAudit(pb, outcome, reason)
	a.URL = res.URL
	a.HTTPStatus = res.HTTPStatus
	a.LatencyMillis = res.Latency.Milliseconds()
	if !res.LastAttempt.IsZero() {
		t := res.LastAttempt.UTC()
		a.LastAttempt = &t
	}
	if res.Err != nil {
		a.Error = res.Err.Error()
	}
	if next != nil {
		t := next.UTC()
		a.NextAttemptAt = &t
	}
	p.emitAudit(out, a)
	if pb.Goal == postback.GoalFTDStatus && outcome == record.OutcomeDelivered {
		p.emitConfirmation(out, pb, false)
	}
}

// auditDelivered re-emits a delivery that Redis remembers.
func (p *Pipeline) auditDelivered(out *outputs, pb postback.Postback, d dedupe.Delivery, replayed bool) {
	a := p.basePostbackAudit(pb, record.OutcomeDelivered, "")
	a.Replayed = replayed
	a.HTTPStatus = d.HTTPStatus
	a.Attempts = d.Attempts
	if d.URL != "" {
		a.URL = d.URL
	}
	if !d.DeliveredAt.IsZero() {
		t := d.DeliveredAt.UTC()
		a.LastAttempt = &t
	}
	p.emitAudit(out, a)
	if pb.Goal == postback.GoalFTDStatus {
		p.emitConfirmation(out, pb, replayed)
	}
}

func (p *Pipeline) emitAudit(out *outputs, a record.Audit) {
	p.metrics.Postbacks.WithLabelValues(p.partnerLabel(a.Network), a.Goal, string(a.Outcome)).Inc()
	if a.Route != "" {
		p.metrics.Routes.WithLabelValues(a.Route).Inc()
	}
	out.add(p.cfg.Topics.Dispatched, a.ClickID, &a)
}

// partnerLabel is network as a metric label: a configured partner's name,
// "" for none, "unknown" for anything else. An input event's network is
// untrusted: as a label, every junk value would be a new series.
func (p *Pipeline) partnerLabel(network string) string {
	if _, ok := p.cfg.Partners[network]; ok || network == "" {
		return network
	}
	return "unknown"
}

func (p *Pipeline) emitConfirmation(out *outputs, pb postback.Postback, replayed bool) {
	out.add(p.cfg.Topics.Confirmed, pb.ClickID, &record.Confirmation{
		SchemaVersion:        record.SchemaVersion,
		ClickID:              pb.ClickID,
		MerchantID:           pb.Merchant,
		Network:              pb.Partner,
		Status:               pb.Status,
		FTDEventID:           pb.FTDEventID,
		QualificationEventID: pb.EventID,
		Amount:               decimalfmt.String(pb.Amount),
		Currency:             pb.Currency,
		PostbackID:           pb.ID,
		ConfirmedAt:          p.now().UTC(),
		Replayed:             replayed,
	})
}

// auditEvent records the outcome of an event that makes no postback (or
// none that could be built).
func (p *Pipeline) auditEvent(out *outputs, ev event.Event, src event.Source, network, goal string, outcome record.Outcome, reason, detail string) {
	env := ev.Common()
	occurred := env.OccurredAt.UTC()
	a := record.Audit{
		SchemaVersion: record.SchemaVersion,
		EventID:       env.EventID,
		EventKind:     ev.EventKind(),
		Source:        src,
		MerchantID:    env.MerchantID,
		ClickID:       env.ClickID,
		Network:       network,
		Goal:          goal,
		Outcome:       outcome,
		Reason:        reason,
		Error:         detail,
		OccurredAt:    &occurred,
		RecordedAt:    p.now().UTC(),
	}
	if len(env.Params) > 0 {
		a.Params = env.Params // the event's own: what it told its click (rebuild-state reads them)
	}
	if a.Network == "" {
		a.Network = env.Network
	}
	switch e := ev.(type) {
	case *event.Deposit:
		a.Amount, a.Currency = decimalfmt.String(e.Amount), e.Currency
	case *event.Revenue:
		a.Amount, a.Currency = decimalfmt.String(e.Amount), e.Currency
	case *event.Qualification:
		a.Status = string(e.Status)
	}
	p.emitAudit(out, a)
}

func (p *Pipeline) deadLetter(out *outputs, d record.DeadLetter) {
	d.SchemaVersion = record.SchemaVersion
	d.RecordedAt = p.now().UTC()
	p.metrics.DLQWrites.WithLabelValues(d.Reason).Inc()
	out.add(p.cfg.Topics.DLQ, d.ClickID, d)
}

// deadLetterInput dead-letters a message that could not be decoded: the raw
// message goes with it so it can be fixed and replayed.
// eventID and clickID are what could be read of the message (may be empty).
func (p *Pipeline) deadLetterInput(out *outputs, m consumer.Message, src event.Source, kind event.Kind, eventID, clickID, reason, detail string) {
	if clickID == "" {
		clickID = string(m.Key)
	}
	d := record.DeadLetter{
		Reason: reason, Error: detail, Source: src, EventKind: kind, EventID: eventID,
		ClickID: clickID, Key: string(m.Key),
	}
	setDeadLetterValue(&d, m.Value)
	p.deadLetter(out, d)
	now := p.now().UTC()
	p.emitAudit(out, record.Audit{
		SchemaVersion: record.SchemaVersion,
		EventID:       eventID,
		EventKind:     kind,
		Source:        src,
		ClickID:       clickID,
		Outcome:       record.OutcomeDeadLettered,
		Reason:        reason,
		Error:         detail,
		RecordedAt:    now,
	})
}

// deadLetterEvent dead-letters a valid event that cannot be served
// (unknown merchant or partner).
func (p *Pipeline) deadLetterEvent(out *outputs, m consumer.Message, src event.Source, ev event.Event, reason, detail string) {
	env := ev.Common()
	d := record.DeadLetter{
		Reason: reason, Error: detail, Source: src, EventID: env.EventID, EventKind: ev.EventKind(),
		ClickID: env.ClickID, Key: string(m.Key),
	}
	setDeadLetterValue(&d, m.Value)
	p.deadLetter(out, d)
	p.auditEvent(out, ev, src, "", "", record.OutcomeDeadLettered, reason, detail)
}

// setDeadLetterValue keeps the source message in d, cut to
// record.MaxDeadLetterValue bytes (at a UTF-8 boundary) so the dead letter
// always fits the DLQ topic; the source coordinates lead to the whole value.
func setDeadLetterValue(d *record.DeadLetter, v []byte) {
	d.ValueSize = len(v)
	if len(v) <= record.MaxDeadLetterValue {
		d.Value = string(v)
		return
	}
	cut := record.MaxDeadLetterValue
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	d.Value, d.ValueTruncated = string(v[:cut]), true
}
