package pipeline

import (
	"fmt"
	"maps"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/postback"
)

// PreviewRoute is where Preview assumes an event goes: what the click's
// state in Redis would say (Preview reads none).
type PreviewRoute struct {
	Partner string
	Via     dedupe.RouteVia
	Params  map[string]string
	// FTD is the click's FTD as its record would hold it, for a
	// qualification: its status change carries the FTD's amount and its id
	// derives from the FTD's event id. Nil: both are left out.
	FTD *PreviewFTD
}

// PreviewFTD is the part of an FTD record a status change uses.
type PreviewFTD struct {
	EventID  string
	Amount   decimal.Decimal
	Currency string
}

// Planned is one postback an event would make.
type Planned struct {
	Postback postback.Postback
	// When is the condition under which it is made ("" always), e.g. "the
	// click's first succeeded deposit".
	When string
	// Skip is why it would not be sent ("" it would be), with the reason
	// the audit record would carry (goal_not_configured, zero_amount, ...).
	Skip string
}

// Preview lists the postbacks ev would make when routed by rt, built by the
// same code as the pipeline's (ids, amounts, statuses, params), without
// Redis: a succeeded deposit gives both its FTD (when it is the click's
// first) and its rdep (otherwise); a qualification's status change goes,
// at run time, to the partner its FTD was sent to, which Preview takes to
// be rt. none says why the event makes no postback at all ("" when it
// makes some).
func Preview(cfg Config, sender Sender, ev event.Event, rt PreviewRoute, now time.Time) (planned []Planned, none string, err error) {
	p := &Pipeline{cfg: cfg, sender: sender, now: func() time.Time { return now }}
	env := ev.Common()
	merchant, ok := cfg.Merchants[env.MerchantID]
	if !ok {
		return nil, "", fmt.Errorf("merchant %q is not configured (the event would be dead-lettered unknown_merchant)", env.MerchantID)
	}
	if _, ok := cfg.Partners[rt.Partner]; !ok {
		return nil, "", fmt.Errorf("partner %q is not configured", rt.Partner)
	}
	r := route{partner: rt.Partner, via: rt.Via, params: maps.Clone(rt.Params)}
	plan := func(goal postback.Goal, status, when string, amount *decimal.Decimal, currency string) {
		pb := p.newPostback(r, goal, status, env, event.Source{})
		if amount != nil {
			pb.HasAmount, pb.Amount, pb.Currency = true, *amount, currency
		}
		skip := ""
		if !sender.HasGoal(rt.Partner, goal) {
			skip = "goal_not_configured"
		}
		planned = append(planned, Planned{Postback: pb, When: when, Skip: skip})
	}
	switch e := ev.(type) {
	case *event.Deposit:
		if e.Status != event.DepositSucceeded {
			return nil, "deposit_" + string(e.Status), nil
		}
		plan(postback.GoalFTD, postback.StatusPending, "the click's first succeeded deposit (FTD)", &e.Amount, e.Currency)
		plan(postback.GoalRD, "", "any later deposit of the click (rdep)", &e.Amount, e.Currency)
		for i := range planned {
			planned[i].Postback.PlayerID = e.PlayerID
		}
	case *event.Revenue:
		if merchant.Deal != "hybrid" {
			return nil, "deal_not_hybrid", nil
		}
		amount := revshareAmount(merchant.RevsharePercent, e)
		plan(postback.GoalRevshare, "", "", &amount, e.Currency)
		planned[0].Postback.PlayerID = e.PlayerID
		if reason := revshareSkip(amount, cfg.Partners[rt.Partner].AllowNegativeRevshare); reason != "" {
			planned[0].Skip = reason
		}
	case *event.Registration:
		goal := postback.GoalReg
		if e.Kind == event.RegistrationTrial {
			goal = postback.GoalTrial
		}
		plan(goal, "", "", nil, "")
		planned[0].Postback.PlayerID = e.PlayerID
	case *event.Qualification:
		when := "once the click's FTD was delivered, to the partner it went to"
		if f := rt.FTD; f != nil {
			plan(postback.GoalFTDStatus, string(e.Status), when, &f.Amount, f.Currency)
			planned[0].Postback.ID = postback.NewID(rt.Partner, postback.GoalFTDStatus, f.EventID, string(e.Status))
			planned[0].Postback.FTDEventID = f.EventID
		} else {
			plan(postback.GoalFTDStatus, string(e.Status), when, nil, "")
		}
	}
	return planned, "", nil
}

// revshareAmount is the revshare postback's amount: the revenue times the
// merchant's percent (100 when unset), rounded to the currency's minor
// units.
func revshareAmount(percent decimal.Decimal, r *event.Revenue) decimal.Decimal {
	if percent.IsZero() {
		percent = hundred
	}
	digits := int32(2)
	if d, ok := event.MinorUnits(r.Currency); ok {
		digits = int32(d)
	}
	return r.Amount.Mul(percent).Div(hundred).Round(digits)
}

// revshareSkip is why a revshare of amount is not sent ("" it is).
func revshareSkip(amount decimal.Decimal, allowNegative bool) string {
	switch {
	case amount.IsZero():
		return "zero_amount"
	case amount.IsNegative() && !allowNegative:
		return "negative_amount"
	}
	return ""
}
