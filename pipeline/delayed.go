package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/postback"
	"github.com/postbackd/postbackd/record"
)

type jobKind string

const (
	// jobPostback retries a postback whose quick tries failed.
	jobPostback jobKind = "postback"
	// jobOrphanCheck is the deadline of a qualification waiting for its FTD.
	jobOrphanCheck jobKind = "orphan_check"
	// jobAttributionDeadline is the deadline of an event waiting for its
	// click's network.
	jobAttributionDeadline jobKind = "attribution_deadline"
)

// job is the payload of a delayed-path entry. It holds values only: the
// partner's token is added when the URL is rendered at send time.
type job struct {
	Kind     jobKind            `json:"kind"`
	Postback *postback.Postback `json:"postback,omitempty"`
	ClickID  string             `json:"click_id,omitempty"`
	EventID  string             `json:"event_id,omitempty"`
	// Qualification is the parked qualification (orphan checks), so that it
	// can be dead-lettered even if Redis forgot it.
	Qualification *parkedQualification `json:"qualification,omitempty"`
	// Waiting is the waiting event (attribution deadlines), for the same
	// reason.
	Waiting *waitingMessage `json:"waiting,omitempty"`
}

func postbackJobID(postbackID string) string { return "pb:" + postbackID }

func orphanJobID(clickID, eventID string) string { return "oq:" + clickID + ":" + eventID }

func (p *Pipeline) schedule(ctx context.Context, id string, due time.Time, j job) error {
	b, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("marshal job %s: %w", id, err)
	}
	if err := p.store.Schedule(ctx, id, due, b); err != nil {
		return err
	}
	p.metrics.DelayedJobs.WithLabelValues("scheduled").Inc()
	return nil
}

func (p *Pipeline) scheduleOrphanCheck(ctx context.Context, clickID, eventID string, pq *parkedQualification, due time.Time) error {
	return p.schedule(ctx, orphanJobID(clickID, eventID), due, job{Kind: jobOrphanCheck, ClickID: clickID, EventID: eventID, Qualification: pq})
}

// RunDelayed works the delayed path until ctx is done: every poll interval it
// takes the due jobs (under a lease, so a job taken by a process that dies
// is handed out again when the lease lapses) and runs them concurrently, at
// most delayed.batch at a time. On stop it takes no more jobs and returns
// once those running have finished (after the drain timeout their contexts
// are cancelled; an HTTP attempt in flight still runs to its answer or its
// timeout). A
// job is acknowledged only after its outcome is durable, exactly like an
// input event's offset.
func (p *Pipeline) RunDelayed(ctx context.Context) error {
	cfg := p.cfg.Delayed
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 500 * time.Millisecond
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 2 * time.Minute
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	// Jobs run under jobCtx, which a stop does not cancel at once: a send
	// in flight finishes (and is marked) instead of being cut off while the
	// partner may already have accepted it. After the drain timeout it is
	// cancelled all the same, so a stop stays bounded by the drain timeout
	// plus the longest partner timeout (an attempt's own bound).
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	drain := p.cfg.DrainTimeout
	if drain <= 0 {
		drain = 30 * time.Second
	}
	stopDrainTimer := context.AfterFunc(ctx, func() { time.AfterFunc(drain, cancelJobs) })
	defer stopDrainTimer()

	// A pool of cfg.Batch job slots, refilled as jobs finish: one slow
	// partner's jobs hold only their own slots, never the next poll.
	slots := make(chan struct{}, cfg.Batch)
	var jobs sync.WaitGroup
	ticker := time.NewTicker(cfg.PollInterval)
	defer ticker.Stop()
	for {
		// Take everything due that fits before waiting for the next tick; a
		// stop ends the taking, not the jobs already taken.
		for ctx.Err() == nil {
			free := cap(slots) - len(slots)
			if free == 0 {
				break
			}
			n, err := p.takeJobs(ctx, jobCtx, cfg.Lease, free, slots, &jobs)
			if err != nil && ctx.Err() == nil {
				p.log.Warn("delayed path poll", zap.Error(err))
			}
			if err != nil || n < free {
				break
			}
		}
		select {
		case <-ctx.Done():
			jobs.Wait()
			return nil
		case <-ticker.C:
		}
	}
}

// takeJobs takes up to max due jobs (while ctx lasts) and starts each in a
// slot of its own under jobCtx; it returns how many it took. The caller has
// at least max free slots.
func (p *Pipeline) takeJobs(ctx, jobCtx context.Context, lease time.Duration, max int, slots chan struct{}, jobs *sync.WaitGroup) (int, error) {
	taken, err := p.store.TakeDue(ctx, p.now(), lease, max)
	if err != nil {
		return 0, err
	}
	p.metrics.DelayedJobs.WithLabelValues("taken").Add(float64(len(taken)))
	for _, j := range taken {
		slots <- struct{}{}
		jobs.Add(1)
		go func() {
			defer jobs.Done()
			defer func() { <-slots }()
			err := p.runJob(jobCtx, j)
			if err == nil || jobCtx.Err() != nil {
				return
			}
			key := failureKey{topic: "job:" + j.ID}
			if permanent(err) && p.failures.add(key) >= maxPermanentTries {
				if derr := p.deadLetterJob(jobCtx, j, err); derr == nil {
					p.failures.forget(key)
					return
				}
			}
			// Not acknowledged: the lease lapses and the job comes back.
			p.log.Warn("delayed job", zap.String("job_id", j.ID), zap.Error(err))
		}()
	}
	return len(taken), nil
}

func (p *Pipeline) runJob(ctx context.Context, dj dedupe.Job) error {
	var j job
	if err := json.Unmarshal(dj.Payload, &j); err != nil {
		// Permanent: after maxPermanentTries it goes to the DLQ, payload
		// and all, for an operator (deadLetterJob).
		return fmt.Errorf("%w: job payload: %w", errUnreadable, err)
	}
	var out outputs
	ack := true
	switch j.Kind {
	case jobPostback:
		if j.Postback == nil {
			return fmt.Errorf("postback job %s has no postback", dj.ID)
		}
		p.metrics.Retries.WithLabelValues(p.partnerLabel(j.Postback.Partner), "delayed_attempt").Inc()
		res, err := p.deliver(ctx, *j.Postback, dj.ID, &out)
		if err != nil {
			return err
		}
		ack = res != resultScheduled
		p.metrics.DelayedJobs.WithLabelValues(res.String()).Inc()
	case jobOrphanCheck:
		parked, state, err := p.store.TakeOrphan(ctx, j.ClickID, j.EventID)
		if err != nil {
			return err
		}
		switch state {
		case dedupe.OrphanTaken:
			if err := p.deadLetterParked(parked, "orphan_qualification",
				"no deposit for click "+j.ClickID+" within the qualification window", &out); err != nil {
				return err
			}
			p.metrics.DelayedJobs.WithLabelValues("dead_lettered").Inc()
		case dedupe.OrphanFTDPending:
			// The FTD exists but is still being delivered (it may be on the
			// delayed path itself); its delivery releases the qualification.
			// Look again later in case it is given up on.
			if err := p.scheduleOrphanCheck(ctx, j.ClickID, j.EventID, j.Qualification, p.now().Add(p.cfg.QualificationWindow)); err != nil {
				return err
			}
			ack = false
		case dedupe.OrphanLapsed:
			// Redis holds nothing of it: its record expired or was lost, so
			// neither its FTD's delivery nor anything else can release it.
			// Dead-letter it from the job's copy rather than drop it.
			if j.Qualification == nil {
				p.log.Error("parked qualification lapsed and its job holds no copy (written by an older version)",
					zap.String("click_id", j.ClickID), zap.String("event_id", j.EventID))
				break
			}
			p.deadLetterQualification(&out, &j.Qualification.Event, j.Qualification.Source, "qualification_lapsed",
				"the parked qualification of click "+j.ClickID+" was no longer in Redis when its window ended")
			p.metrics.DelayedJobs.WithLabelValues("dead_lettered").Inc()
		}
	case jobAttributionDeadline:
		if err := p.runAttributionDeadline(ctx, j, &out); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: job %s has unknown kind %q", errUnreadable, dj.ID, j.Kind)
	}
	if err := p.flush(ctx, &out); err != nil {
		return err
	}
	p.finishWaits(ctx, &out)
	if !ack {
		return nil
	}
	return p.store.Ack(ctx, dj.ID)
}

// deadLetterJob writes the dead letter of a delayed job that failed
// permanently maxPermanentTries times, its payload (values only, never a
// secret) with it, and acknowledges the job.
func (p *Pipeline) deadLetterJob(ctx context.Context, dj dedupe.Job, cause error) error {
	var out outputs
	d := record.DeadLetter{Reason: reasonUnprocessable, Error: "delayed job " + dj.ID + ": " + cause.Error()}
	setDeadLetterValue(&d, dj.Payload)
	p.deadLetter(&out, d)
	if err := p.flush(ctx, &out); err != nil {
		return err
	}
	p.log.Error("delayed job fails permanently; dead-lettered", zap.String("job_id", dj.ID), zap.Error(cause))
	p.metrics.DelayedJobs.WithLabelValues("dead_lettered").Inc()
	return p.store.Ack(ctx, dj.ID)
}
