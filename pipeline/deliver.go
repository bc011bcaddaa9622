package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/dispatcher"
	"github.com/postbackd/postbackd/internal/batch"
	"github.com/postbackd/postbackd/postback"
	"github.com/postbackd/postbackd/record"
)

// deliverResult says what became of a postback.
type deliverResult int

const (
	resultDelivered deliverResult = iota
	resultScheduled               // handed to the delayed path
	resultDeadLettered
)

// String is the result's label in postbackd_delayed_jobs_total.
func (r deliverResult) String() string {
	switch r {
	case resultDelivered:
		return "delivered"
	case resultScheduled:
		return "rescheduled"
	default:
		return "dead_lettered"
	}
}

// deliver sends pb at most once in effect and records the outcome in out:
//
//	claim → send → mark delivered    (delivered; an FTD releases a waiting qualification)
//	            └→ release → schedule (retryable failure, within the partner's maximum age)
//	            └→ release → DLQ      (permanent refusal, or too old)
//
// jobID names the delayed-path job pb came from ("" on the main path); a
// reschedule reuses it, so the caller must not Ack a job that was rescheduled.
// A non-nil error means Redis could not be reached; calling deliver again is
// safe.
func (p *Pipeline) deliver(ctx context.Context, pb postback.Postback, jobID string, out *outputs) (deliverResult, error) {
	return p.deliverClaimed(ctx, pb, jobID, out, nil)
}

// takenClaim is a claim taken before deliver, together with the
// classification (see classifyDeposit), with the token it was taken with.
type takenClaim struct {
	postbackID string
	token      string
	result     dedupe.ClaimResult
}

// deliverClaimed is deliver with the claim of pb already taken, when
// taken is non-nil and names pb: it is used instead of a first claim (held,
// the claim is waited for as deliver does, with the same token).
func (p *Pipeline) deliverClaimed(ctx context.Context, pb postback.Postback, jobID string, out *outputs, taken *takenClaim) (deliverResult, error) {
	if taken != nil && taken.postbackID != pb.ID {
		// Not this postback's claim: leave it to its lease, claim pb's own.
		taken = nil
	}
	if marked := p.accepted.pending(pb.ID); marked != nil {
		// This process saw the partner accept it and is still marking it:
		// wait for the mark rather than claim (its claim may have lapsed),
		// and claim again after it, whatever was taken before.
		select {
		case <-marked:
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for the delivered mark of %s: %w", pb.ID, ctx.Err())
		}
		if taken != nil {
			taken.result = dedupe.ClaimResult{State: dedupe.ClaimHeld}
		}
	}
	var claim dedupe.ClaimResult
	var err error
	if taken != nil && taken.result.State != dedupe.ClaimHeld {
		claim = taken.result
	} else {
		token := ""
		if taken != nil {
			token = taken.token
		}
		if claim, err = p.claim(ctx, pb, token); err != nil {
			return 0, err
		}
	}
	if claim.State == dedupe.ClaimDelivered && claim.Delivery.Refused != "" {
		// Refused for good before (the outcome's records were not written,
		// or this is a redelivery): write them again, send nothing.
		res := dispatcher.Result{HTTPStatus: claim.Delivery.HTTPStatus, URL: claim.Delivery.URL,
			LastAttempt: claim.Delivery.DeliveredAt, Err: errors.New(claim.Delivery.Refused)}
		pb.Attempts = claim.Delivery.Attempts
		return resultDeadLettered, p.giveUp(ctx, pb, "postback_refused", res, out)
	}
	if claim.State == dedupe.ClaimDelivered {
		// Delivered before (a redelivery after a crash, or a retry of Handle
		// after an output write failed): re-emit the outcome from what Redis
		// remembers, so the audit trail is complete; nothing is sent.
		p.auditDelivered(out, pb, claim.Delivery, true)
		if pb.Goal == postback.GoalFTD {
			// A crash may have come between the FTD's MarkDelivered and the
			// status change it released. MarkDelivered is safe to repeat: it
			// writes nothing new and hands the released qualification back.
			parked, err := p.store.MarkDelivered(ctx, pb.ClickID, pb.ID, claim.Delivery, &dedupe.FTDDelivered{EventID: pb.EventID})
			if errors.Is(err, dedupe.ErrNotFTD) {
				// Its FTD record was lost after the delivery: dead-lettered
				// when it was sent; again here, in case that never got out.
				p.deadLetterLostFTD(out, pb)
				return resultDelivered, nil
			}
			if err != nil {
				return 0, err
			}
			if parked != nil {
				if err := p.resumeParked(ctx, parked, pb, out); err != nil {
					return 0, err
				}
			}
		}
		return resultDelivered, nil
	}

	// The whole send, rate-limit wait and quick retries included, must end
	// inside the claim's lease: past it another worker could claim and send
	// too. The dispatcher refuses a rate-limit wait that would overrun this
	// deadline (a retryable failure: the delayed path takes it).
	lease := p.claimLease(pb.Partner)
	sendCtx, cancelSend := context.WithTimeout(ctx, lease-leaseMargin)
	res := p.sender.Send(sendCtx, pb)
	cancelSend()
	pb.Attempts += res.Attempts
	if res.Delivered {
		var ftd *dedupe.FTDDelivered
		if pb.Goal == postback.GoalFTD {
			ftd = &dedupe.FTDDelivered{EventID: pb.EventID}
		}
		d := dedupe.Delivery{HTTPStatus: res.HTTPStatus, Attempts: pb.Attempts, DeliveredAt: res.LastAttempt, URL: res.URL}
		parked, err := p.markDelivered(ctx, pb, d, ftd)
		if errors.Is(err, dedupe.ErrNotFTD) {
			// Redis recorded the delivery (it is never sent again) but refused
			// to mark the FTD record, which no longer names this deposit:
			// lost to eviction or a failover. Retrying cannot help and must
			// not resend: audit the delivery with the error, dead-letter it
			// for an operator, and move on.
			res.Err = fmt.Errorf("%s: %w", lostFTDDetail(pb), err)
			p.auditAttempt(out, pb, record.OutcomeDelivered, reasonFTDRecordLost, res, nil)
			p.deadLetterLostFTD(out, pb)
			return resultDelivered, nil
		}
		if err != nil {
			return 0, err
		}
		p.auditAttempt(out, pb, record.OutcomeDelivered, "", res, nil)
		if parked != nil {
			if err := p.resumeParked(ctx, parked, pb, out); err != nil {
				return 0, err
			}
		}
		return resultDelivered, nil
	}
	if ctx.Err() != nil {
		// Stopping, past the drain timeout: Send stopped before or between
		// attempts, or its last attempt ran to its timeout without an answer
		// (an attempt is never cut short; an answer that came counts). That
		// says nothing about the partner, who may have accepted it. Release
		// the claim so the event's next owner retries at once rather than a
		// lease later: if the partner did accept, that resend is the
		// documented duplicate window, with the same transaction_id.
		_ = p.store.Release(context.WithoutCancel(ctx), pb.ClickID, pb.ID, claim.Token)
		return 0, fmt.Errorf("send %s: %w", pb.ID, ctx.Err())
	}
	if res.Permanent {
		// Refused for good: remember it in place of a delivery, so that a
		// retry of the event (its outputs not written yet) or a redelivery
		// does not ask the partner again; the mark drops the claim.
		refusal := "refused"
		if res.Err != nil {
			refusal = res.Err.Error()
		}
		d := dedupe.Delivery{HTTPStatus: res.HTTPStatus, Attempts: pb.Attempts, DeliveredAt: res.LastAttempt, URL: res.URL, Refused: refusal}
		if _, err := p.store.MarkDelivered(ctx, pb.ClickID, pb.ID, d, nil); err != nil {
			return 0, err
		}
		return resultDeadLettered, p.giveUp(ctx, pb, "postback_refused", res, out)
	}
	if err := p.store.Release(ctx, pb.ClickID, pb.ID, claim.Token); err != nil {
		return 0, err
	}

	age := p.now().Sub(pb.CreatedAt)
	if age >= p.sender.MaxAge(pb.Partner) {
		return resultDeadLettered, p.giveUp(ctx, pb, "max_age_exceeded", res, out)
	}
	delay := p.sender.NextDelay(pb.Partner, pb.Attempts)
	if res.RetryAfter > delay {
		delay = res.RetryAfter
	}
	next := p.now().Add(delay)
	if jobID == "" {
		jobID = postbackJobID(pb.ID)
	}
	if err := p.schedule(ctx, jobID, next, job{Kind: jobPostback, Postback: &pb}); err != nil {
		return 0, err
	}
	p.metrics.Retries.WithLabelValues(p.partnerLabel(pb.Partner), "delayed").Inc()
	p.auditAttempt(out, pb, record.OutcomeFailed, "retry_scheduled", res, &next)
	return resultScheduled, nil
}

// claim takes the send guard of pb. When another worker holds it (a
// rebalance handed this event to us while its old owner is still sending),
// it waits: the holder either delivers (we then see ClaimDelivered) or its
// lease lapses and we take over. Skipping instead would lose the postback if
// the holder crashed after we committed.
//
// token is the claim token to use ("" for a new one): the claim is
// re-entrant with it, so a lease taken with it before is taken back.
func (p *Pipeline) claim(ctx context.Context, pb postback.Postback, token string) (dedupe.ClaimResult, error) {
	lease := p.claimLease(pb.Partner)
	if token == "" {
		var err error
		if token, err = dedupe.NewClaimToken(); err != nil {
			return dedupe.ClaimResult{}, fmt.Errorf("claim token: %w", err)
		}
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = time.Second
	b.MaxElapsedTime = 0
	for {
		res, err := p.store.Claim(ctx, pb.ClickID, pb.ID, token, lease)
		if err != nil || res.State != dedupe.ClaimHeld {
			return res, err
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("wait for claim of %s: %w", pb.ID, ctx.Err())
		case <-time.After(b.NextBackOff()):
		}
	}
}

// leaseMargin is kept between the end of a send (its deadline) and the end
// of its claim's lease, for the delivered mark to reach Redis.
const leaseMargin = config.LeaseMargin

// claimLease is the partner's config.Partner.ClaimLease, the one formula
// that delayed.lease is validated against too. deliver bounds the send by
// it, so a lease cannot expire mid-send and let a second worker send too.
func (p *Pipeline) claimLease(partner string) time.Duration {
	return p.cfg.Partners[partner].ClaimLease()
}

// markDelivered records a delivery the partner accepted. The partner has
// it, so it must never be sent again: the mark (safe to repeat) is retried
// until it lands, however long Redis is away and whatever the caller's
// context says (a stop does not cut it short), and meanwhile this process
// remembers the acceptance (acceptedSet), so that a redelivery of the event
// waits for the mark instead of taking a lapsed claim and sending again.
// Only a refusal (ErrNotFTD) ends it early.
func (p *Pipeline) markDelivered(ctx context.Context, pb postback.Postback, d dedupe.Delivery, ftd *dedupe.FTDDelivered) (*dedupe.Parked, error) {
	marked := p.accepted.add(pb.ID)
	defer marked()
	mctx := context.WithoutCancel(ctx)
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond), backoff.WithMaxInterval(2*time.Second), backoff.WithMaxElapsedTime(0))
	var parked *dedupe.Parked
	for attempt := 1; ; attempt++ {
		var err error
		parked, err = p.store.MarkDelivered(mctx, pb.ClickID, pb.ID, d, ftd)
		if err == nil || errors.Is(err, dedupe.ErrNotFTD) || errors.Is(err, batch.ErrClosed) {
			// Closed: the pipeline is gone (Close names what was left).
			return parked, err
		}
		if attempt == 1 || attempt%20 == 0 {
			p.log.Warn("delivered mark not recorded yet; retrying until Redis takes it (the postback is not sent again)",
				zap.String("postback_id", pb.ID), zap.String("click_id", pb.ClickID), zap.Int("attempt", attempt), zap.Error(err))
		}
		time.Sleep(b.NextBackOff()) // paced retries of a mark that must land; no context can cancel it
	}
}

// reasonFTDRecordLost: an FTD postback was delivered but its FTD record in
// Redis no longer names its deposit, so it could not be marked.
const reasonFTDRecordLost = "ftd_record_lost"

func lostFTDDetail(pb postback.Postback) string {
	return "the partner accepted FTD " + pb.EventID + " of click " + pb.ClickID +
		", but its FTD record in Redis is lost or names another deposit: the delivery is recorded, a status change cannot follow"
}

// deadLetterLostFTD writes the dead letter of a delivered FTD whose record
// could not be marked.
func (p *Pipeline) deadLetterLostFTD(out *outputs, pb postback.Postback) {
	p.deadLetter(out, record.DeadLetter{
		Reason: reasonFTDRecordLost, Error: lostFTDDetail(pb), Source: pb.Source, EventID: pb.EventID,
		ClickID: pb.ClickID, Postback: pb, Attempts: pb.Attempts,
	})
}

// giveUp dead-letters pb. An FTD that is given up on is recorded as failed
// in Redis (FailFTD): a qualification waiting for it follows it to the DLQ,
// and one that comes later is dead-lettered at once, as its status change
// can never be sent.
func (p *Pipeline) giveUp(ctx context.Context, pb postback.Postback, reason string, res dispatcher.Result, out *outputs) error {
	detail := reason
	if res.Err != nil {
		detail = res.Err.Error()
	}
	p.deadLetter(out, record.DeadLetter{
		Reason: reason, Error: detail, Source: pb.Source, EventID: pb.EventID,
		ClickID: pb.ClickID, Postback: pb, Attempts: pb.Attempts,
	})
	p.auditAttempt(out, pb, record.OutcomeDeadLettered, reason, res, nil)
	if pb.Goal == postback.GoalFTD {
		return p.failParked(ctx, pb, reasonFTDDeadLettered, out)
	}
	return nil
}
