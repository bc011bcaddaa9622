package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// This file generates the input stream and, alongside it, the oracle: what
// postbackd must do with that stream according to DESIGN.md. The oracle is
// plain Go over the generated events; it calls no postbackd package, so a
// bug shared by the pipeline and its own tests cannot hide here.

// Topic roles; the test's config maps each to a unique topic name.
const (
	roleDeposits       = "deposits"
	roleRevenue        = "revenue"
	roleRegistrations  = "registrations"
	roleQualifications = "qualifications"
	roleDispatched     = "dispatched"
	roleConfirmed      = "confirmed"
	roleDLQ            = "dlq"
)

var inputRoles = []string{roleDeposits, roleRevenue, roleRegistrations, roleQualifications}
var allRoles = []string{roleDeposits, roleRevenue, roleRegistrations, roleQualifications, roleDispatched, roleConfirmed, roleDLQ}

// Merchants and partners of the test configuration (config.yaml.tmpl).
const (
	merchantCasino = "casino"     // hybrid deal, revshare 35 %, partner scaleo
	merchantSports = "sportsbook" // CPA deal, partner scaleo
	merchantDating = "dating"     // CPA deal, partner datingnet (tracker string)
	partnerScaleo  = "scaleo"
	partnerDating  = "datingnet"
	revsharePct    = 35
)

// Tracker answers a scripted event's postback gets (keyed by source event id).
const (
	planOK       = ""
	planRetry2   = "retry2"  // 503 twice, then 200: delivered by the quick tries in place
	planRetry5   = "retry5"  // 503 five times: the quick tries fail, the delayed path delivers
	planRefuse   = "refuse"  // 400: permanent, dead-lettered
	expiredOffer = "expired" // datingnet answers 200 "ERROR ..." (a body refusal)
)

// inMsg is one input message: a topic role, the key and the raw value.
type inMsg struct {
	role  string
	key   string
	value []byte
}

// expPostback is one postback the partner must accept exactly once (or, with
// outcome dead_lettered, never).
type expPostback struct {
	key      string // goal|status|source event id: the tracker's and audit's join key
	partner  string
	click    string
	goal     string
	status   string
	eventID  string
	amount   string // as the URL must carry it: the currency's minor digits
	currency string
	outcome  string            // delivered or dead_lettered
	tr       map[string]string // datingnet: tracker-string fields expected in the URL
}

// expConfirm is the confirmation of one click's FTD status change.
type expConfirm struct {
	status, amount, currency string
}

// script is a generated stream plus its oracle.
type script struct {
	// phases are produced in order; phase 0 holds the registrations (and
	// qualifications that must be parked before their deposit arrives).
	phases [][]inMsg
	// regEvents are phase 0's registration event ids: they must be audited
	// before the rest is produced.
	regEvents []string
	postbacks map[string]*expPostback
	// plan: source event id → tracker plan.
	plan map[string]string
	// dlq: reference (event id, or the marker inside an undecodable value) →
	// expected DLQ reason.
	dlq map[string]string
	// skips: event id → expected audit reason of a skipped outcome.
	skips map[string]string
	// maybeSkips: event id → the reason of a skipped outcome that may or may
	// not be audited, depending on timing (a repeated qualification is
	// audited as a duplicate once the first one decided, and leaves no record
	// while the first one is still parked).
	maybeSkips map[string]string
	// redelivered: event ids produced twice; a refused postback of such an
	// event is attempted, and dead-lettered, once per copy.
	redelivered map[string]bool
	// confirms: click → expected confirmation.
	confirms map[string]expConfirm
	// ordered lists (ftd key, status key) pairs whose order the partner must
	// see: the FTD strictly before its status change.
	ordered [][2]string
	events  int
}

type scriptOptions struct {
	scaleoClicks int
	datingClicks int
	// orphans adds clicks whose qualification never gets a deposit: they
	// reach the DLQ only after qualification.window, so only scenarios with
	// a short window use them.
	orphans bool
	// unordered produces the registrations with the rest of the stream
	// instead of first, so a click's deposits and revenue can be consumed
	// before its registration (they wait for it); and every dating click
	// that registers also sends a trial without params, as a payments
	// platform that stores the click once does.
	unordered bool
	// allInvalid adds every kind of invalid input the chaos suite sends
	// (moreInvalidEvents) to the few of every script.
	allInvalid bool
	seed       uint64
}

func (s *script) expectedDelivered() int {
	n := 0
	for _, p := range s.postbacks {
		if p.outcome == "delivered" {
			n++
		}
	}
	return n
}

// minorDigits is ISO 4217's minor units of the currencies the script uses.
var minorDigits = map[string]int{"EUR": 2, "USD": 2, "JPY": 0, "KWD": 3}

func pbKey(goal, status, eventID string) string { return goal + "|" + status + "|" + eventID }

// generator builds one script.
type generator struct {
	rng       *rand.Rand
	s         *script
	n         int
	at        time.Time
	unordered bool
}

func (g *generator) nextID(prefix string) string {
	g.n++
	return fmt.Sprintf("%s-%05d", prefix, g.n)
}

// event builds an input message: the envelope plus fields.
func (g *generator) event(role, click, merchant, id string, fields map[string]any) inMsg {
	g.at = g.at.Add(time.Second)
	v := map[string]any{"event_id": id, "occurred_at": g.at.Format(time.RFC3339), "merchant_id": merchant, "click_id": click}
	for k, f := range fields {
		v[k] = f
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	g.s.events++
	return inMsg{role: role, key: click, value: b}
}

func (g *generator) expect(p *expPostback) {
	p.key = pbKey(p.goal, p.status, p.eventID)
	if _, dup := g.s.postbacks[p.key]; dup {
		panic("oracle: two expected postbacks with key " + p.key)
	}
	g.s.postbacks[p.key] = p
}

// pickPlan gives a deliverable postback its tracker behaviour.
func (g *generator) pickPlan(id string, allowDelayed bool) {
	switch r := g.rng.IntN(100); {
	case r < 8:
		g.s.plan[id] = planRetry2
	case r < 11 && allowDelayed:
		g.s.plan[id] = planRetry5
	}
}

func (g *generator) amount(cur string) string {
	switch minorDigits[cur] {
	case 0:
		return fmt.Sprintf("%d", 1000+g.rng.IntN(50000))
	case 3:
		return fmt.Sprintf("%d.%03d", 5+g.rng.IntN(200), g.rng.IntN(1000))
	default:
		return fmt.Sprintf("%d.%02d", 10+g.rng.IntN(490), g.rng.IntN(100))
	}
}

// newScript generates the stream. Per Scaleo-style click: a registration
// (or trial), sometimes a failed deposit, the FTD (sometimes redelivered,
// sometimes refused, sometimes only delivered by the delayed path), repeat
// deposits, revenue (revshare for the hybrid merchant; skipped for the CPA
// one, for zero and for negative amounts) and qualifications: before the
// deposit (parked), after it, repeated with the same status, contradicted.
// Per dating click: a registration with a tracker string, signup and
// rebills; every 20th click's offer has expired and the tracker refuses it
// in the body. Invalid events are spread through the stream.
func newScript(o scriptOptions) *script {
	g := &generator{
		rng: rand.New(rand.NewPCG(o.seed, 0x9e3779b97f4a7c15)),
		s: &script{
			postbacks: map[string]*expPostback{}, plan: map[string]string{}, dlq: map[string]string{},
			skips: map[string]string{}, maybeSkips: map[string]string{}, redelivered: map[string]bool{},
			confirms: map[string]expConfirm{},
		},
		at:        time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC),
		unordered: o.unordered,
	}
	var phase0 []inMsg
	var journeys [][]inMsg
	for i := 0; i < o.scaleoClicks; i++ {
		early, rest := g.scaleoClick(i, o.orphans)
		early, rest = g.order(early, rest)
		phase0 = append(phase0, early...)
		journeys = append(journeys, rest)
	}
	for j := 0; j < o.datingClicks; j++ {
		early, rest := g.datingClick(j)
		early, rest = g.order(early, rest)
		phase0 = append(phase0, early...)
		journeys = append(journeys, rest)
	}
	journeys = append(journeys, g.invalidEvents())
	if o.allInvalid {
		journeys = append(journeys, g.moreInvalidEvents())
	}
	g.s.phases = [][]inMsg{phase0, g.interleave(journeys)}
	if o.unordered {
		g.s.regEvents = nil // produced with the rest: nothing to wait for first
	}
	return g.s
}

// order moves a click's registrations from the early phase to the head of
// its journey when the script is unordered; the journey's events still go
// on four topics, so which is consumed first is anybody's guess.
func (g *generator) order(early, rest []inMsg) ([]inMsg, []inMsg) {
	if !g.unordered {
		return early, rest
	}
	var keep, regs []inMsg
	for _, m := range early {
		if m.role == roleRegistrations {
			regs = append(regs, m)
		} else {
			keep = append(keep, m)
		}
	}
	return keep, append(regs, rest...)
}

// interleave merges the journeys at random while keeping each one's order,
// as a live stream of many players would.
func (g *generator) interleave(journeys [][]inMsg) []inMsg {
	var out []inMsg
	for {
		var live []int
		for i, j := range journeys {
			if len(j) > 0 {
				live = append(live, i)
			}
		}
		if len(live) == 0 {
			return out
		}
		i := live[g.rng.IntN(len(live))]
		out = append(out, journeys[i][0])
		journeys[i] = journeys[i][1:]
	}
}

func (g *generator) scaleoClick(i int, orphans bool) (early, rest []inMsg) {
	click := fmt.Sprintf("sc-%04d", i)
	merchant := merchantCasino
	if i%2 == 1 {
		merchant = merchantSports
	}
	player := "p-" + click

	// Registration (every 7th a trial): records the click's params.
	regID := g.nextID("reg")
	kind, goal := "registration", "reg"
	if i%7 == 0 {
		kind, goal = "trial", "trial"
	}
	early = append(early, g.event(roleRegistrations, click, merchant, regID, map[string]any{
		"kind": kind, "player_id": player, "params": map[string]string{"custom2": fmt.Sprintf("camp-%d", i%5)},
	}))
	g.s.regEvents = append(g.s.regEvents, regID)
	g.pickPlan(regID, true)
	g.expect(&expPostback{partner: partnerScaleo, click: click, goal: goal, eventID: regID, outcome: "delivered"})

	qualify := func(status string) (inMsg, string) {
		id := g.nextID("qual")
		return g.event(roleQualifications, click, merchant, id, map[string]any{"status": status}), id
	}
	pickStatus := func() string {
		if g.rng.IntN(4) == 0 {
			return "rejected"
		}
		return "approved"
	}

	if orphans && i%40 == 11 {
		// No deposit ever: the qualification waits out its window.
		m, id := qualify("approved")
		rest = append(rest, m)
		g.s.dlq[id] = "orphan_qualification"
		return early, rest
	}

	refusedFTD := i%25 == 7
	earlyQual := i%10 == 3 || (refusedFTD && i%50 == 7)
	var firstQualID, firstStatus string
	if earlyQual {
		// Produced with the registrations: it is parked before its deposit.
		firstStatus = pickStatus()
		var m inMsg
		m, firstQualID = qualify(firstStatus)
		early = append(early, m)
	}

	if g.rng.IntN(5) == 0 {
		id := g.nextID("dep")
		rest = append(rest, g.event(roleDeposits, click, merchant, id, map[string]any{
			"amount": "25.00", "currency": "EUR", "status": "failed", "player_id": player, "payment_method": "card",
		}))
		g.s.skips[id] = "deposit_failed"
	}

	cur := []string{"EUR", "USD", "JPY", "KWD"}[g.rng.IntN(4)]
	ftdID := g.nextID("dep")
	ftdAmount := g.amount(cur)
	ftd := g.event(roleDeposits, click, merchant, ftdID, map[string]any{
		"amount": ftdAmount, "currency": cur, "status": "succeeded", "player_id": player, "payment_method": "card",
	})
	rest = append(rest, ftd)
	ftdExp := &expPostback{partner: partnerScaleo, click: click, goal: "ftd", status: "pending", eventID: ftdID,
		amount: ftdAmount, currency: cur, outcome: "delivered"}
	if refusedFTD {
		g.s.plan[ftdID] = planRefuse
		ftdExp.outcome = "dead_lettered"
		g.s.dlq[ftdID] = "postback_refused"
		if earlyQual {
			// The parked qualification can never be sent: it follows its FTD
			// to the DLQ.
			g.s.dlq[firstQualID] = "ftd_dead_lettered"
		}
	} else {
		g.pickPlan(ftdID, true)
	}
	g.expect(ftdExp)
	if i%6 == 0 {
		rest = append(rest, ftd) // the payments platform redelivers it
		g.s.events++
		g.s.redelivered[ftdID] = true
	}

	// Qualifications after the FTD; none for a refused FTD beyond the
	// parked one (a later one would wait for a delivery that never comes).
	var later []inMsg
	if !refusedFTD {
		if !earlyQual && g.rng.IntN(10) < 7 {
			firstStatus = pickStatus()
			var m inMsg
			m, firstQualID = qualify(firstStatus)
			g.pickPlan(firstQualID, false)
			later = append(later, m)
		}
		if firstQualID != "" {
			if i%9 == 0 {
				m, id := qualify(firstStatus) // a repeat: nothing new is sent
				later = append(later, m)
				g.s.maybeSkips[id] = "duplicate_qualification"
			}
			if i%11 == 0 {
				other := map[string]string{"approved": "rejected", "rejected": "approved"}[firstStatus]
				m, id := qualify(other)
				later = append(later, m)
				g.s.skips[id] = "qualification_conflict" // the audit's error names the status already recorded
			}
			g.expect(&expPostback{partner: partnerScaleo, click: click, goal: "ftd_status", status: firstStatus,
				eventID: firstQualID, amount: ftdAmount, currency: cur, outcome: "delivered"})
			g.s.confirms[click] = expConfirm{status: firstStatus, amount: ftdAmount, currency: cur}
			g.s.ordered = append(g.s.ordered, [2]string{ftdExp.key, pbKey("ftd_status", firstStatus, firstQualID)})
		}
	}

	// Repeat deposits, revenue and the later qualifications, mixed.
	var tail []inMsg
	for k := 0; k < 4+g.rng.IntN(9); k++ {
		id := g.nextID("dep")
		c := []string{"EUR", "USD", "JPY", "KWD"}[g.rng.IntN(4)]
		amt := g.amount(c)
		tail = append(tail, g.event(roleDeposits, click, merchant, id, map[string]any{
			"amount": amt, "currency": c, "status": "succeeded", "player_id": player,
		}))
		exp := &expPostback{partner: partnerScaleo, click: click, goal: "rdep", eventID: id, amount: amt, currency: c, outcome: "delivered"}
		if g.rng.IntN(40) == 0 {
			g.s.plan[id] = planRefuse
			exp.outcome = "dead_lettered"
			g.s.dlq[id] = "postback_refused"
		} else {
			g.pickPlan(id, true)
		}
		g.expect(exp)
	}
	for k := 0; k < 1+g.rng.IntN(3); k++ {
		id := g.nextID("rev")
		var amt string
		r := g.rng.IntN(20)
		cents := (50 + g.rng.IntN(5000)) * 20 // a multiple of 20 cents: 35 % of it is exact
		switch {
		case r == 0:
			amt = "0.00"
		case r < 3:
			amt = fmt.Sprintf("-%d.%02d", cents/100, cents%100)
		default:
			amt = fmt.Sprintf("%d.%02d", cents/100, cents%100)
		}
		tail = append(tail, g.event(roleRevenue, click, merchant, id, map[string]any{"amount": amt, "currency": "EUR", "player_id": player}))
		switch {
		case merchant != merchantCasino:
			g.s.skips[id] = "deal_not_hybrid"
		case r == 0:
			g.s.skips[id] = "zero_amount"
		case r < 3:
			g.s.skips[id] = "negative_amount"
		default:
			share := cents * revsharePct / 100
			g.pickPlan(id, true)
			g.expect(&expPostback{partner: partnerScaleo, click: click, goal: "revshare", eventID: id,
				amount: fmt.Sprintf("%d.%02d", share/100, share%100), currency: "EUR", outcome: "delivered"})
		}
	}
	// Later qualifications go anywhere after the FTD, in their own order.
	for len(tail) > 0 || len(later) > 0 {
		if len(later) > 0 && (len(tail) == 0 || g.rng.IntN(3) == 0) {
			rest, later = append(rest, later[0]), later[1:]
		} else {
			rest, tail = append(rest, tail[0]), tail[1:]
		}
	}
	return early, rest
}

func (g *generator) datingClick(j int) (early, rest []inMsg) {
	click := fmt.Sprintf("dt-%04d", j)
	offer := []string{"pps-gold", "rs-silver", "pps-bronze"}[j%3]
	expired := j%20 == 0
	if expired {
		offer = expiredOffer
	}
	outcome := "delivered"
	if expired {
		outcome = "dead_lettered"
	}
	// Fields the URL must carry: decoded from the tracker string, and the
	// offer; every postback of the click, whatever event it came from.
	tr := map[string]string{"affid": fmt.Sprintf("aff%d", j%13), "transid": fmt.Sprintf("tx%d", j), "clickid": fmt.Sprintf("c%d", j), "offer": offer}
	regID := g.nextID("reg")
	kind, goal := "registration", "reg"
	if j%2 == 0 {
		kind, goal = "trial", "trial"
	}
	early = append(early, g.event(roleRegistrations, click, merchantDating, regID, map[string]any{
		"kind": kind, "params": map[string]string{
			"tr":       fmt.Sprintf("trID_%d_%s-%s-%s-x%d_trID", 1000000+j, tr["affid"], tr["transid"], tr["clickid"], j%4),
			"offer_id": offer,
		},
	}))
	g.s.regEvents = append(g.s.regEvents, regID)
	g.expect(&expPostback{partner: partnerDating, click: click, goal: goal, eventID: regID, outcome: outcome, tr: tr})
	if expired {
		g.s.dlq[regID] = "postback_refused"
	}
	if g.unordered && kind == "registration" {
		// The trial after the registration, without params: it must not
		// erase what the registration told.
		id := g.nextID("trial")
		early = append(early, g.event(roleRegistrations, click, merchantDating, id, map[string]any{"kind": "trial"}))
		g.expect(&expPostback{partner: partnerDating, click: click, goal: "trial", eventID: id, outcome: outcome, tr: tr})
		if expired {
			g.s.dlq[id] = "postback_refused"
		}
	}
	for k := 0; k < 1+j%3; k++ { // signup, then rebills
		id := g.nextID("dep")
		rest = append(rest, g.event(roleDeposits, click, merchantDating, id, map[string]any{
			"amount": "29.99", "currency": "USD", "status": "succeeded", "player_id": "p-" + click,
		}))
		goal := "ftd"
		status := "pending"
		if k > 0 {
			goal, status = "rdep", ""
		}
		g.expect(&expPostback{partner: partnerDating, click: click, goal: goal, status: status, eventID: id,
			amount: "29.99", currency: "USD", outcome: outcome, tr: tr})
		if expired {
			g.s.dlq[id] = "postback_refused"
		} else {
			g.pickPlan(id, false)
		}
	}
	if !expired && j%15 == 1 {
		// datingnet takes no status change: the qualification is skipped.
		id := g.nextID("qual")
		rest = append(rest, g.event(roleQualifications, click, merchantDating, id, map[string]any{"status": "approved"}))
		g.s.skips[id] = "goal_not_configured"
	}
	if j%4 == 3 {
		id := g.nextID("rev")
		rest = append(rest, g.event(roleRevenue, click, merchantDating, id, map[string]any{"amount": "12.00", "currency": "USD"}))
		g.s.skips[id] = "deal_not_hybrid"
	}
	return early, rest
}

// invalidEvents are input the pipeline must dead-letter with a reason. Each
// carries a unique marker (its event id, or inside the raw value) that the
// DLQ record's event_id or value names.
func (g *generator) invalidEvents() []inMsg {
	var out []inMsg
	for k := 0; k < 5; k++ {
		marker := g.nextID("broken")
		out = append(out, inMsg{role: roleDeposits, key: "sc-0001", value: []byte(`{"event_id": "` + marker + `", "amount": 12.5`)})
		g.s.dlq[marker] = "undecodable"
		g.s.events++

		id := g.nextID("badcur")
		out = append(out, g.event(roleDeposits, "sc-0002", merchantCasino, id, map[string]any{
			"amount": "10.00", "currency": "XYZ", "status": "succeeded", "player_id": "p"}))
		g.s.dlq[id] = "unknown_currency"

		id = g.nextID("noamount")
		out = append(out, g.event(roleRevenue, "sc-0004", merchantCasino, id, map[string]any{"currency": "EUR"}))
		g.s.dlq[id] = "schema_invalid"

		id = g.nextID("badstatus")
		out = append(out, g.event(roleQualifications, "sc-0006", merchantCasino, id, map[string]any{"status": "maybe"}))
		g.s.dlq[id] = "schema_invalid"

		id = g.nextID("nomerchant")
		out = append(out, g.event(roleRegistrations, "zz-0001", "no-such-merchant", id, map[string]any{"kind": "registration"}))
		g.s.dlq[id] = "unknown_merchant"
	}
	return out
}

// moreInvalidEvents are the other kinds of bad input a payments platform
// (or an attacker) can send, one of each, each with the reason its dead
// letter must carry: malformed JSON of every shape, wrong types, missing
// fields, bad times, negative and exponent amounts, too many decimals, a
// zero deposit, an unknown field (an unknown schema version), an over-long
// id, a value far beyond any sane size, and injection attempts in the string
// fields that decide routing. Events without an event id carry a "broken-"
// marker that dlqRef finds in the raw value.
func (g *generator) moreInvalidEvents() []inMsg {
	var out []inMsg
	raw := func(role, key, value string) {
		out = append(out, inMsg{role: role, key: key, value: []byte(value)})
		g.s.events++
	}
	marker := func() string { return g.nextID("broken") }
	dep := func(id string, fields map[string]any) map[string]any {
		f := map[string]any{"amount": "10.00", "currency": "EUR", "status": "succeeded", "player_id": "p"}
		for k, v := range fields {
			f[k] = v
		}
		return f
	}
	// A tombstone (empty value): the one DLQ record without any marker.
	raw(roleDeposits, "tomb-0001", "")
	g.s.dlq["?"] = "undecodable"
	m := marker()
	raw(roleRevenue, "sc-0003", `["`+m+`", 1, 2]`)
	g.s.dlq[m] = "undecodable"
	m = marker()
	raw(roleRegistrations, "sc-0003", `hello `+m)
	g.s.dlq["?hello "+m] = "undecodable"
	m = marker()
	raw(roleDeposits, "sc-0005", `{"player_id": "`+m+`", "click_id": "sc-0005", "merchant_id": "casino", "occurred_at": "2026-11-24T12:00:00Z", "amount": "1.00", "currency": "EUR", "status": "succeeded"}`)
	g.s.dlq[m] = "schema_invalid" // no event_id

	type bad struct {
		role, click, merchant, prefix, reason string
		fields                                map[string]any
	}
	for _, b := range []bad{
		{roleDeposits, "sc-0007", merchantCasino, "numamount", "schema_invalid", dep("", map[string]any{"amount": 12.5})},
		{roleDeposits, "sc-0007", merchantCasino, "negamount", "schema_invalid", dep("", map[string]any{"amount": "-5.00"})},
		{roleDeposits, "sc-0007", merchantCasino, "expamount", "schema_invalid", dep("", map[string]any{"amount": "1e3"})},
		{roleDeposits, "sc-0007", merchantCasino, "decimals", "invalid_amount", dep("", map[string]any{"amount": "1.0000000000000000001"})},
		{roleDeposits, "sc-0007", merchantCasino, "zerodep", "invalid_amount", dep("", map[string]any{"amount": "0"})},
		{roleDeposits, "sc-0007", merchantCasino, "nocurrency", "schema_invalid", map[string]any{"amount": "1.00", "status": "succeeded", "player_id": "p"}},
		{roleDeposits, "sc-0007", merchantCasino, "lowercur", "schema_invalid", dep("", map[string]any{"currency": "eur"})},
		{roleDeposits, "sc-0007", merchantCasino, "version", "schema_invalid", dep("", map[string]any{"schema_version": 99})},
		{roleDeposits, "sc-0007", merchantCasino, "status", "schema_invalid", dep("", map[string]any{"status": "refunded"})},
		{roleRevenue, "sc-0007", merchantCasino, "badtime", "schema_invalid", map[string]any{"amount": "1.00", "currency": "EUR", "occurred_at": "yesterday"}},
		{roleRegistrations, "sc-0007", merchantCasino, "kind", "schema_invalid", map[string]any{"kind": "admin'--"}},
		{roleRegistrations, "sc-0007", merchantCasino, "params", "schema_invalid", map[string]any{"kind": "registration", "params": "not-a-map"}},
		{roleQualifications, "sc-0007", merchantCasino, "nostatus", "schema_invalid", map[string]any{}},
		{roleDeposits, "sc-0007", "casino' OR '1'='1", "inj-merchant", "unknown_merchant", dep("", nil)},
		{roleDeposits, "sc-0007", merchantCasino, "inj-network", "unknown_partner", dep("", map[string]any{"network": "scaleo\r\nX-Injected: 1<script>"})},
		{roleDeposits, "sc-0007", merchantCasino, "inj-currency", "schema_invalid", dep("", map[string]any{"currency": "EUR'; DROP TABLE deposits;--"})},
		{roleDeposits, "sc-0007", merchantCasino, "huge", "schema_invalid", dep("", map[string]any{"zz_padding": strings.Repeat("A", 300_000)})},
	} {
		id := g.nextID(b.prefix)
		out = append(out, g.event(b.role, b.click, b.merchant, id, b.fields))
		g.s.dlq[id] = b.reason
	}
	// A click id beyond the schema's 256 characters.
	id := g.nextID("longclick")
	out = append(out, g.event(roleDeposits, strings.Repeat("c", 300), merchantCasino, id, dep("", nil)))
	g.s.dlq[id] = "schema_invalid"
	return out
}

// dlqRef names a DLQ record for the oracle: its event id, else the event id
// inside its raw value (a record for input that failed validation carries
// the raw message), else the marker inside an undecodable value.
func dlqRef(eventID, value string) string {
	if eventID != "" {
		return eventID
	}
	var v struct {
		EventID string `json:"event_id"`
	}
	if json.Unmarshal([]byte(value), &v) == nil && v.EventID != "" {
		return v.EventID
	}
	if i := strings.Index(value, `"broken-`); i >= 0 {
		rest := value[i+1:]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			return rest[:j]
		}
	}
	return "?" + value
}
