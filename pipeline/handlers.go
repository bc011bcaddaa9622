package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/internal/decimalfmt"
	"github.com/postbackd/postbackd/postback"
	"github.com/postbackd/postbackd/record"
)

var hundred = decimal.NewFromInt(100)

func (p *Pipeline) handleDeposit(ctx context.Context, d *event.Deposit, merchant config.Merchant, u *unit) error {
	if d.Status != event.DepositSucceeded {
		// Attributed all the same: its network and params are the click's.
		if _, err := p.attribute(ctx, d, config.Merchant{}, u); err != nil {
			return err
		}
		p.auditEvent(&u.out, d, u.src, "", "", record.OutcomeSkipped, "deposit_"+string(d.Status), "")
		return nil
	}
	rt, ok, err := p.routeEvent(ctx, d, merchant, u)
	if err != nil || !ok {
		return err
	}
	cls, taken, err := p.classifyDeposit(ctx, d, rt)
	if err != nil {
		return err
	}
	status := depositStatus(cls.Goal)
	if cls.Goal == postback.GoalFTD {
		if r := cls.FTD.Route; r.Partner != "" && r.Partner != rt.partner {
			// The FTD was classified with another route before (a redelivery
			// that found the click changed, with the route memo lost): the
			// record's route is what it was sent with, and its postback id.
			rt = routeOf(r)
			if _, known := p.cfg.Partners[rt.partner]; !known {
				return fmt.Errorf("%w %q", errUnknownPartner, rt.partner)
			}
		}
	}
	pb := p.newPostback(rt, cls.Goal, status, &d.Envelope, u.src)
	pb.PlayerID = d.PlayerID
	pb.HasAmount, pb.Amount, pb.Currency = true, d.Amount, d.Currency
	if !p.sender.HasGoal(rt.partner, cls.Goal) {
		p.auditPostback(&u.out, pb, record.OutcomeSkipped, "goal_not_configured", nil)
		if cls.Goal == postback.GoalFTD {
			// Nothing will ever be delivered for this FTD, so a status change
			// can never follow: release a waiting qualification to the DLQ
			// rather than let it sit until its window passes.
			return p.failParked(ctx, pb, reasonFTDNotSent, &u.out)
		}
		return nil
	}
	_, err = p.deliverClaimed(ctx, pb, "", &u.out, taken)
	return err
}

// depositStatus is the status a deposit's postback is sent with: pending for
// the FTD (approved or rejected comes with the qualification), none for a
// repeat deposit. It is part of the postback id, which classifyDeposit derives
// before the goal is known to claim either postback: both derivations use it.
func depositStatus(goal postback.Goal) string {
	if goal == postback.GoalFTD {
		return postback.StatusPending
	}
	return ""
}

// classifyDeposit classifies d (routed by rt) and, in the same script, claims
// the postback its goal calls for: one Redis round trip where Classify and
// Claim take two. It claims nothing (taken is nil; deliver claims) when the
// partner lacks the ftd or the rdep goal (no postback may be sent), when
// this process is still marking one of the two postbacks delivered (deliver
// waits for that first), and when the deposit is an FTD classified before
// with another partner (its postback is another one).
func (p *Pipeline) classifyDeposit(ctx context.Context, d *event.Deposit, rt route) (dedupe.Classification, *takenClaim, error) {
	dep := dedupe.Deposit{
		ClickID: d.ClickID, EventID: d.EventID,
		Amount: decimalfmt.String(d.Amount), Currency: d.Currency, OccurredAt: d.OccurredAt,
		Route: dedupe.Route{Partner: rt.partner, Via: rt.via, Params: rt.params},
	}
	// The ids newPostback gives the deposit's postback as either goal.
	ftdID := postback.NewID(rt.partner, postback.GoalFTD, d.EventID, depositStatus(postback.GoalFTD))
	rdID := postback.NewID(rt.partner, postback.GoalRD, d.EventID, depositStatus(postback.GoalRD))
	if !p.sender.HasGoal(rt.partner, postback.GoalFTD) || !p.sender.HasGoal(rt.partner, postback.GoalRD) ||
		p.accepted.pending(ftdID) != nil || p.accepted.pending(rdID) != nil {
		cls, err := p.store.Classify(ctx, dep)
		return cls, nil, err
	}
	token, err := dedupe.NewClaimToken()
	if err != nil {
		return dedupe.Classification{}, nil, fmt.Errorf("claim token: %w", err)
	}
	cc, err := p.store.ClassifyClaim(ctx, dedupe.ClassifyClaim{
		Deposit: dep, FTDPostbackID: ftdID, RDPostbackID: rdID, Lease: p.claimLease(rt.partner), Token: token,
	})
	if err != nil || cc.Claim == nil {
		return cc.Classification, nil, err
	}
	id := rdID
	if cc.Goal == postback.GoalFTD {
		id = ftdID
	}
	return cc.Classification, &takenClaim{postbackID: id, token: token, result: *cc.Claim}, nil
}

func (p *Pipeline) handleRevenue(ctx context.Context, r *event.Revenue, merchant config.Merchant, u *unit) error {
	if merchant.Deal != "hybrid" {
		if _, err := p.attribute(ctx, r, config.Merchant{}, u); err != nil {
			return err
		}
		p.auditEvent(&u.out, r, u.src, "", string(postback.GoalRevshare), record.OutcomeSkipped, "deal_not_hybrid", "")
		return nil
	}
	rt, ok, err := p.routeEvent(ctx, r, merchant, u)
	if err != nil || !ok {
		return err
	}
	amount := revshareAmount(merchant.RevsharePercent, r)
	pb := p.newPostback(rt, postback.GoalRevshare, "", &r.Envelope, u.src)
	pb.PlayerID = r.PlayerID
	pb.HasAmount, pb.Amount, pb.Currency = true, amount, r.Currency
	if reason := revshareSkip(amount, p.cfg.Partners[rt.partner].AllowNegativeRevshare); reason != "" {
		p.auditPostback(&u.out, pb, record.OutcomeSkipped, reason, nil)
		return nil
	}
	if !p.sender.HasGoal(rt.partner, postback.GoalRevshare) {
		p.auditPostback(&u.out, pb, record.OutcomeSkipped, "goal_not_configured", nil)
		return nil
	}
	_, err = p.deliver(ctx, pb, "", &u.out)
	return err
}

func (p *Pipeline) handleRegistration(ctx context.Context, r *event.Registration, merchant config.Merchant, u *unit) error {
	// The attribution adds the registration's network and params to the
	// click first, so later events find them even if this registration's own
	// postback fails, and it hands over the events that waited for them.
	rt, ok, err := p.routeEvent(ctx, r, merchant, u)
	if err != nil || !ok {
		return err
	}
	goal := postback.GoalReg
	if r.Kind == event.RegistrationTrial {
		goal = postback.GoalTrial
	}
	pb := p.newPostback(rt, goal, "", &r.Envelope, u.src)
	pb.PlayerID = r.PlayerID
	if !p.sender.HasGoal(rt.partner, goal) {
		p.auditPostback(&u.out, pb, record.OutcomeSkipped, "goal_not_configured", nil)
		return nil
	}
	_, err = p.deliver(ctx, pb, "", &u.out)
	return err
}

// parkedQualification is what a waiting qualification stores in Redis so it
// can be resumed by whoever delivers the FTD, or dead-lettered as an orphan.
type parkedQualification struct {
	Event  event.Qualification `json:"event"`
	Source event.Source        `json:"source"`
}

func (p *Pipeline) handleQualification(ctx context.Context, q *event.Qualification, merchant config.Merchant, u *unit) error {
	src, out := u.src, &u.out
	// The qualification contributes to its click like any event; its own
	// route matters only for an FTD recorded without one (older versions).
	attr, err := p.attribute(ctx, q, merchant, u)
	if err != nil {
		return err
	}
	pq := &parkedQualification{Event: *q, Source: src}
	payload, err := json.Marshal(pq)
	if err != nil {
		return fmt.Errorf("marshal qualification: %w", err)
	}
	res, err := p.store.Qualify(ctx, dedupe.Qualification{
		ClickID: q.ClickID, EventID: q.EventID, Status: string(q.Status), Payload: payload, At: p.now(),
	})
	if err != nil {
		return err
	}
	switch res.Decision {
	case dedupe.DecideSend:
		if res.Repeated && res.FTD.StatusEventID != q.EventID {
			// Another qualification with the same status decided it before:
			// a no-op. (The deciding event itself, redelivered, goes on so
			// that a send cut short by a crash is completed.)
			p.auditEvent(out, q, src, "", string(postback.GoalFTDStatus), record.OutcomeSkipped, "duplicate_qualification", "")
			return nil
		}
		rt, ok := p.conversionRoute(res.FTD.Route, attr)
		if !ok {
			p.deadLetterQualification(out, q, src, "no_route",
				"the FTD of click "+q.ClickID+" was recorded without its route and the click has none")
			return nil
		}
		return p.sendStatusChange(ctx, q, rt, src, res.FTD.EventID, res.FTD.Amount, res.FTD.Currency, out)
	case dedupe.DecideConflict:
		p.auditEvent(out, q, src, "", string(postback.GoalFTDStatus), record.OutcomeSkipped, "qualification_conflict",
			"the FTD of this click is already "+res.ExistingStatus)
		return nil
	case dedupe.DecideWait:
		if res.Repeated && res.ParkedEventID != q.EventID {
			// Another qualification with the same status waits already; it
			// is the one the FTD's delivery releases.
			p.auditEvent(out, q, src, "", string(postback.GoalFTDStatus), record.OutcomeSkipped, "duplicate_qualification", "")
			return nil
		}
		// This qualification is parked (now, or before: a redelivery); the
		// FTD's delivery releases it and writes its outcome. This job is the
		// deadline: if no FTD has come by then, it is an orphan. Scheduling
		// is idempotent by job id and due from the parking time, so a
		// redelivery after a crash between Qualify and here schedules the
		// same deadline rather than leaving the wait without one. The job
		// keeps a copy, so a parked record Redis lost is dead-lettered too.
		parkedAt := res.ParkedAt
		if parkedAt.IsZero() { // not written by this version: wait a full window
			parkedAt = p.now()
		}
		return p.scheduleOrphanCheck(ctx, q.ClickID, q.EventID, pq, parkedAt.Add(p.cfg.QualificationWindow))
	case dedupe.DecideFTDFailed:
		// The FTD was given up on (Redis remembers it): no status change can
		// ever be sent. Nothing was parked; a redelivery decides the same
		// and writes the dead letter again (at least once).
		reason := ftdFailureReason(res.FTD.Failure)
		p.deadLetterQualification(out, q, src, reason, ftdNotDeliveredDetail(q.ClickID, res.FTD.EventID))
		return nil
	default:
		return fmt.Errorf("qualify: unknown decision %v", res.Decision)
	}
}

// conversionRoute is the route of an FTD's status change: the route the FTD
// was sent with, kept in its record. A record written before routes were
// kept falls back to the click's route as the qualification found it.
func (p *Pipeline) conversionRoute(stored dedupe.Route, attr dedupe.Attribution) (route, bool) {
	if stored.Partner != "" {
		return route{partner: stored.Partner, via: dedupe.RouteConversion, params: stored.Params}, true
	}
	if attr.State != dedupe.StateRouted {
		return route{}, false
	}
	return routeOf(attr.Route), true
}

// sendStatusChange sends the FTD status change: the FTD's amount and
// currency, the qualification's status. Its postback id is derived from the
// FTD's event id and the status, so repeated qualifications map onto one send.
func (p *Pipeline) sendStatusChange(ctx context.Context, q *event.Qualification, rt route, src event.Source,
	ftdEventID, amount, currency string, out *outputs) error {
	partner := rt.partner
	if _, known := p.cfg.Partners[partner]; !known {
		// Its partner went away (configuration changed since the FTD).
		return fmt.Errorf("%w %q", errUnknownPartner, partner)
	}
	status := string(q.Status)
	amt, err := decimal.NewFromString(amount)
	if err != nil {
		return fmt.Errorf("%w: ftd record of click %q holds amount %q: %w", errUnreadable, q.ClickID, amount, err)
	}
	pb := p.newPostback(rt, postback.GoalFTDStatus, status, &q.Envelope, src)
	pb.ID = postback.NewID(partner, postback.GoalFTDStatus, ftdEventID, status)
	pb.FTDEventID = ftdEventID
	pb.HasAmount, pb.Amount, pb.Currency = true, amt, currency
	if !p.sender.HasGoal(partner, postback.GoalFTDStatus) {
		p.auditPostback(out, pb, record.OutcomeSkipped, "goal_not_configured", nil)
		return nil
	}
	_, err = p.deliver(ctx, pb, "", out)
	return err
}

// resumeParked sends the status change of a qualification that waited for
// the FTD pb, which has just been delivered.
func (p *Pipeline) resumeParked(ctx context.Context, parked *dedupe.Parked, ftd postback.Postback, out *outputs) error {
	var pq parkedQualification
	if err := json.Unmarshal(parked.Payload, &pq); err != nil {
		return fmt.Errorf("%w: parked qualification %q: %w", errUnreadable, parked.EventID, err)
	}
	// The status change goes where the FTD just went, with its params.
	rt := route{partner: ftd.Partner, via: dedupe.RouteConversion, params: ftd.Params}
	err := p.sendStatusChange(ctx, &pq.Event, rt, pq.Source, ftd.EventID, decimalfmt.String(ftd.Amount), ftd.Currency, out)
	if errors.Is(err, errUnknownPartner) {
		// Its partner went away while it waited (configuration changed).
		// The qualification is released in Redis already: dead-letter it
		// here, in its own name, rather than fail the FTD that released it.
		return p.deadLetterParked(parked, "unknown_partner", err.Error(), out)
	}
	return err
}

// Dead-letter reasons of a qualification whose FTD will never be delivered,
// one per cause. The reason is also what FailFTD records on the FTD record,
// so a qualification that comes after the failure gets the same one.
const (
	// reasonFTDDeadLettered: the FTD postback was given up on (refused by
	// the partner, or older than its maximum age).
	reasonFTDDeadLettered = "ftd_dead_lettered"
	// reasonFTDNotSent: the FTD's partner has no ftd goal, so it was never
	// sent.
	reasonFTDNotSent = "ftd_not_sent"
)

// ftdFailureReason maps the failure FailFTD recorded to the qualification's
// dead-letter reason; an unknown one (written by another version) is the
// general reasonFTDDeadLettered.
func ftdFailureReason(failure string) string {
	if failure == reasonFTDNotSent {
		return reasonFTDNotSent
	}
	return reasonFTDDeadLettered
}

func ftdNotDeliveredDetail(clickID, ftdEventID string) string {
	return "the FTD " + ftdEventID + " of click " + clickID + " was not delivered"
}

// failParked records that the FTD ftd will never be delivered and
// dead-letters the qualification waiting for it, if any. The order makes a
// crash harmless: FailFTD's mark in Redis comes first and is repeatable (a
// repeat hands the same qualification back), the dead letter and audit
// record are written by the caller's flush after it; if that never happens
// the FTD event is handled again, and so is this.
func (p *Pipeline) failParked(ctx context.Context, ftd postback.Postback, reason string, out *outputs) error {
	parked, err := p.store.FailFTD(ctx, ftd.ClickID, ftd.EventID, reason)
	if err != nil || parked == nil {
		return err
	}
	return p.deadLetterParked(parked, reason, ftdNotDeliveredDetail(ftd.ClickID, ftd.EventID), out)
}

// deadLetterParked writes the dead letter and audit record of a parked
// qualification, resumed from its payload.
func (p *Pipeline) deadLetterParked(parked *dedupe.Parked, reason, detail string, out *outputs) error {
	var pq parkedQualification
	if err := json.Unmarshal(parked.Payload, &pq); err != nil {
		return fmt.Errorf("%w: parked qualification %q: %w", errUnreadable, parked.EventID, err)
	}
	p.deadLetterQualification(out, &pq.Event, pq.Source, reason, detail)
	return nil
}

// deadLetterQualification writes a qualification's dead letter and its
// audit record (outcome dead_lettered).
func (p *Pipeline) deadLetterQualification(out *outputs, q *event.Qualification, src event.Source, reason, detail string) {
	p.deadLetter(out, record.DeadLetter{
		Reason: reason, Error: detail, Source: src, EventID: q.EventID,
		EventKind: event.KindQualification, ClickID: q.ClickID,
	})
	p.auditEvent(out, q, src, "", string(postback.GoalFTDStatus), record.OutcomeDeadLettered, reason, detail)
}
