// Package rebuild recovers postbackd's Redis state from its audit trail
// after Redis lost data: `postbackd rebuild-state` reads the audit topic
// (postbacks.dispatched) from its start, folds every record into the state
// it implies (Fold), writes that back with dedupe's RestoreBatch, and can
// rewind the consumer group so that what was only in flight at the loss
// (waiting events, parked qualifications, scheduled retries, none of which
// the audit holds) is derived again from the input topics.
//
// What the audit restores, per click:
//
//   - the FTD record: the first deposit audited with goal ftd, its amount,
//     currency, occurred_at and route (partner, how it was chosen, params);
//     delivered when its postback was audited delivered, failed when it was
//     dead-lettered (or its partner has no ftd goal); the status and the
//     qualification that set it from the delivered status change. FTD
//     records never expire, so this is restored however old the audit.
//   - the final outcome of every postback (delivered, or dead-lettered,
//     which must not be sent again either) while its RecordTTL lasts.
//   - the classification answer of every deposit (ftd or rdep) and the
//     route memo of every event routed by its click or by default.
//   - the click context: its first network, its params (first value of
//     each key, from the params each postback was rendered with) and when
//     its registration was first seen.
//
// A click's audit records share its key, hence its partition, so they are
// read in the order they were written, which is the order Fold needs.
package rebuild

import (
	"maps"
	"slices"
	"time"

	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/postback"
	"github.com/postbackd/postbackd/record"
)

// Fold accumulates audit records into per-click state. Feed it every
// record of the audit topic, each partition in offset order (partitions in
// any order); then Clicks says what to restore. The zero value is not
// ready: use NewFold.
type Fold struct {
	clicks map[string]*click
	order  []string
	// Records counts the records added; Ignored those that carried nothing
	// to restore (no click id: undecodable input); Legacy the postback
	// records written before audit records carried params and occurred_at
	// (their clicks' params cannot be restored from them).
	Records, Ignored, Legacy int
}

// NewFold returns an empty Fold.
func NewFold() *Fold { return &Fold{clicks: map[string]*click{}} }

type stamped[T any] struct {
	value T
	at    time.Time // when it was first audited: its RecordTTL runs from there
}

type click struct {
	merchant            string
	network             string
	params              map[string]string
	firstSeen, lastSeen time.Time
	registeredAt        time.Time
	ftd                 *dedupe.FTDRecord
	// status and statusEvent are from the first status change decided; a
	// status change's record can precede its FTD's (the FTD's outputs were
	// still being written), so it is set on the record only in Clicks.
	status, statusEvent string
	// otherFTDs are deposits audited as FTD after the first one: a loss
	// before this rebuild classified a second FTD for the click.
	otherFTDs  []string
	answers    map[string]stamped[postback.Goal]
	routes     map[string]stamped[dedupe.Route]
	deliveries map[string]stamped[dedupe.Delivery]
	// pending are postbacks whose last outcome is a failed attempt (a retry
	// scheduled in Redis, or a replay): postback id -> the input message
	// they came from (a rewind must reach it to send them again).
	pending map[string]event.Source
}

// Add folds one audit record in.
func (f *Fold) Add(a record.Audit) {
	f.Records++
	if a.ClickID == "" {
		f.Ignored++
		return
	}
	if a.PostbackID != "" && a.OccurredAt == nil {
		f.Legacy++
	}
	c := f.clicks[a.ClickID]
	if c == nil {
		c = &click{
			answers:    map[string]stamped[postback.Goal]{},
			routes:     map[string]stamped[dedupe.Route]{},
			deliveries: map[string]stamped[dedupe.Delivery]{},
			pending:    map[string]event.Source{},
		}
		f.clicks[a.ClickID] = c
		f.order = append(f.order, a.ClickID)
	}
	at := a.RecordedAt
	if c.firstSeen.IsZero() || at.Before(c.firstSeen) {
		c.firstSeen = at
	}
	if at.After(c.lastSeen) {
		c.lastSeen = at
	}
	if c.merchant == "" {
		c.merchant = a.MerchantID
	}
	c.attribution(a)
	c.conversion(a)
	c.outcome(a)
}

// notAttributed are the reasons of records of events that never reached
// attribution: invalid input, and events whose state could not be read.
var notAttributed = map[string]bool{
	"undecodable": true, "schema_invalid": true, "unknown_currency": true, "invalid_amount": true,
	"unknown_merchant": true, "unknown_partner": true, "unprocessable": true,
}

// attribution learns the click context and the route memo from a record.
func (c *click) attribution(a record.Audit) {
	if notAttributed[a.Reason] && a.PostbackID == "" {
		return
	}
	if a.EventKind == event.KindRegistration && (a.Network != "" || a.Reason == "no_route") && c.registeredAt.IsZero() {
		c.registeredAt = a.RecordedAt
	}
	if a.PostbackID == "" {
		// An event that made no postback (a failed deposit, a CPA
		// merchant's revenue, a qualification): its record has its own
		// network and params, which it gave its click by the attribution's
		// rule — a network when the click had none, params unless it named
		// another network than the click's.
		if a.Network != "" && c.network == "" {
			c.network = a.Network
		}
		if a.Network == "" || a.Network == c.network {
			c.addParams(a.Params)
		}
		return
	}
	if a.Network == "" {
		return
	}
	via := dedupe.RouteVia(a.Route)
	// Whose params these are: an event routed by its click, by default, or
	// by its own network when the click had none or the same, rendered the
	// click's params (overlaid by its own, which it also gave the click).
	// One that named another network rendered only its own; a status change
	// rendered its FTD's.
	contributes := false
	switch {
	case via == dedupe.RouteClick:
		if c.network == "" {
			c.network = a.Network
		}
		contributes = true
	case via == dedupe.RouteEvent && a.ClickNetwork == "":
		if c.network == "" {
			c.network = a.Network
		}
		contributes = true
	case via == dedupe.RouteEvent:
		if c.network == "" {
			c.network = a.ClickNetwork
		}
	case via == dedupe.RouteDefault:
		contributes = true
	}
	if contributes {
		c.addParams(a.Params)
	}
	if (via == dedupe.RouteClick || via == dedupe.RouteDefault) && a.EventID != "" {
		if _, ok := c.routes[a.EventID]; !ok {
			c.routes[a.EventID] = stamped[dedupe.Route]{dedupe.Route{Partner: a.Network, Via: via}, a.RecordedAt}
		}
	}
}

// addParams adds ps to the click's params, the first value of a key kept.
func (c *click) addParams(ps map[string]string) {
	for k, v := range ps {
		if _, ok := c.params[k]; !ok && v != "" {
			if c.params == nil {
				c.params = map[string]string{}
			}
			c.params[k] = v
		}
	}
}

// conversion learns the FTD record, its status and the deposits' answers.
func (c *click) conversion(a record.Audit) {
	goal := postback.Goal(a.Goal)
	switch goal {
	case postback.GoalFTD, postback.GoalRD:
		if a.EventID == "" || a.PostbackID == "" {
			return
		}
		if _, ok := c.answers[a.EventID]; !ok {
			c.answers[a.EventID] = stamped[postback.Goal]{goal, a.RecordedAt}
		}
	case postback.GoalFTDStatus:
		// The status is recorded on the FTD record when the status change is
		// decided, before it is sent: any status change with a postback id
		// (delivered, failed, refused, skipped for want of the goal) means
		// the FTD had been delivered and holds that status.
		if a.PostbackID != "" && a.Status != "" && c.status == "" {
			c.status, c.statusEvent = a.Status, a.EventID
		}
		return
	default:
		return
	}
	if goal != postback.GoalFTD {
		return
	}
	if c.ftd == nil {
		r := &dedupe.FTDRecord{
			EventID: a.EventID, Amount: a.Amount, Currency: a.Currency,
			Route: dedupe.Route{Partner: a.Network, Via: dedupe.RouteVia(a.Route), Params: maps.Clone(a.Params)},
		}
		if a.OccurredAt != nil {
			r.OccurredAt = *a.OccurredAt
		}
		c.ftd = r
	}
	if c.ftd.EventID != a.EventID {
		if !slices.Contains(c.otherFTDs, a.EventID) {
			c.otherFTDs = append(c.otherFTDs, a.EventID)
		}
		return
	}
	switch {
	case a.Outcome == record.OutcomeDelivered:
		c.ftd.Delivered, c.ftd.Failure = true, ""
	case c.ftd.Delivered:
	case a.Outcome == record.OutcomeDeadLettered:
		c.ftd.Failure = "ftd_dead_lettered"
	case a.Outcome == record.OutcomeFailed:
		c.ftd.Failure = "" // open again (a replay), or not given up yet
	case a.Outcome == record.OutcomeSkipped && a.Reason == "goal_not_configured":
		c.ftd.Failure = "ftd_not_sent"
	}
}

// outcome learns a postback's final outcome: delivered, or dead-lettered
// (never sent again either). A delivery wins: it is a fact.
func (c *click) outcome(a record.Audit) {
	if a.PostbackID == "" {
		return
	}
	at := a.RecordedAt
	if a.LastAttempt != nil {
		at = *a.LastAttempt
	}
	d := dedupe.Delivery{HTTPStatus: a.HTTPStatus, Attempts: a.Attempts, DeliveredAt: at, URL: a.URL}
	prev, seen := c.deliveries[a.PostbackID]
	delivered := seen && prev.value.Refused == ""
	switch a.Outcome {
	case record.OutcomeDelivered:
		if !delivered {
			c.deliveries[a.PostbackID] = stamped[dedupe.Delivery]{d, a.RecordedAt}
		}
		delete(c.pending, a.PostbackID)
	case record.OutcomeDeadLettered:
		if !delivered {
			d.Refused = string(record.OutcomeDeadLettered) // never "": "" is a delivery
			if a.Reason != "" {
				d.Refused = a.Reason
			}
			if a.Error != "" {
				d.Refused += ": " + a.Error
			}
			c.deliveries[a.PostbackID] = stamped[dedupe.Delivery]{d, a.RecordedAt}
		}
		delete(c.pending, a.PostbackID)
	case record.OutcomeFailed:
		if delivered {
			return
		}
		// A failed attempt after a dead letter: the postback was replayed
		// (postbackd replay forgets its refusal and audits that), so it is
		// open again, not refused.
		delete(c.deliveries, a.PostbackID)
		if _, ok := c.pending[a.PostbackID]; !ok {
			c.pending[a.PostbackID] = a.Source
		}
	}
}

// Clicks is what to restore for every click seen, in the order clicks
// were first seen. Items live what is left of their RecordTTL at now;
// those with nothing left are dropped (Redis would have forgotten them
// too), FTD records are kept whatever their age.
func (f *Fold) Clicks(now time.Time, recordTTL time.Duration) []dedupe.RestoredClick {
	left := func(at time.Time) time.Duration { return recordTTL - now.Sub(at) }
	out := make([]dedupe.RestoredClick, 0, len(f.order))
	for _, id := range f.order {
		c := f.clicks[id]
		r := dedupe.RestoredClick{ClickID: id}
		if ttl := left(c.lastSeen); ttl > 0 && (c.network != "" || len(c.params) > 0 || !c.registeredAt.IsZero()) {
			r.Context = &dedupe.ClickContext{
				MerchantID: c.merchant, Network: c.network, Params: c.params,
				FirstSeenAt: c.firstSeen, RegisteredAt: c.registeredAt,
			}
			r.ContextTTL = ttl
		}
		if c.ftd != nil {
			ftd := *c.ftd
			if c.status != "" {
				// A status change is sent only once its FTD was delivered.
				ftd.Delivered, ftd.Failure = true, ""
				ftd.Status, ftd.StatusEventID = c.status, c.statusEvent
			}
			r.FTD = &ftd
		}
		r.Answers = items(c.answers, left)
		r.Routes = items(c.routes, left)
		r.Deliveries = items(c.deliveries, left)
		out = append(out, r)
	}
	return out
}

// items lists m's entries that have TTL left, sorted by id (stable output).
func items[T any](m map[string]stamped[T], left func(time.Time) time.Duration) []dedupe.RestoredItem[T] {
	var out []dedupe.RestoredItem[T]
	for _, id := range slices.Sorted(maps.Keys(m)) {
		if ttl := left(m[id].at); ttl > 0 {
			out = append(out, dedupe.RestoredItem[T]{ID: id, Value: m[id].value, TTL: ttl})
		}
	}
	return out
}

// SecondFTDs lists the clicks whose audit shows more than one deposit as
// FTD (after an earlier loss that was not rebuilt): click id -> the later
// deposits' event ids. The first one is what Clicks restores.
func (f *Fold) SecondFTDs() map[string][]string {
	out := map[string][]string{}
	for id, c := range f.clicks {
		if len(c.otherFTDs) > 0 {
			out[id] = c.otherFTDs
		}
	}
	return out
}

// Pending counts the postbacks whose last audited outcome is a failed
// attempt: their retries were scheduled in Redis, so after a loss only a
// rewind of the input to their events sends them again. Their events are
// returned as the first offset, per input partition, a rewind must reach.
func (f *Fold) Pending() (n int, from map[event.Source]bool) {
	from = map[event.Source]bool{}
	for _, c := range f.clicks {
		for _, src := range c.pending {
			n++
			from[src] = true
		}
	}
	return n, from
}

// Len is the number of clicks seen.
func (f *Fold) Len() int { return len(f.order) }
