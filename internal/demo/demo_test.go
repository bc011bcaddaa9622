package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/record"
)

// demoSecrets are the tokens loadConfig gives the demo's partners.
var demoSecrets = []string{"demo-scaleo-secret", "demo-dating-secret"}

// expectation is what a run of the script must produce, worked out from
// the script's messages alone, independently of the pipeline.
type expectation struct {
	counts        map[[3]string]int // as Summary.Counts
	events        map[string]int    // event id → messages carrying it
	confirmations map[string]string // click → qualification status
	deadLetters   map[string]int    // reason → records
}

// expect walks the script the way DESIGN.md describes the pipeline:
//
//   - a registration is a "reg" (or "trial") postback to the click's partner;
//   - a failed deposit is skipped; the first succeeded deposit of a click is
//     its FTD, the same event again is a replay of the delivered FTD (not
//     sent again), any other succeeded deposit is a repeat deposit;
//   - casino revenue (hybrid deal) is a revshare postback, skipped when the
//     amount is negative;
//   - a qualification of a click with an FTD is an ftd_status postback and
//     a confirmation (one each: no click is qualified twice); without any
//     deposit it waits, then goes to the DLQ as an orphan;
//   - the dating tracker refuses offer "expired" in the body of a 200: every
//     postback of such a click is dead-lettered as postback_refused, which
//     the table marks "(refused)";
//   - an undecodable message and an unknown currency are dead-lettered.
func expect(t *testing.T, s *script) expectation {
	t.Helper()
	e := expectation{counts: map[[3]string]int{}, events: map[string]int{}, confirmations: map[string]string{}, deadLetters: map[string]int{}}
	network := map[string]string{"casino-1": "scaleo", "dating-1": "datingnet"}
	expired := map[string]bool{}
	seenFTD := map[string]string{} // click → event id of its FTD
	deposited := map[string]bool{}
	var qualifications []map[string]any
	add := func(net, goal, outcome string) { e.counts[[3]string{net, goal, outcome}]++ }
	sent := func(click, net, goal string) {
		if expired[click] {
			add(net, goal, string(record.OutcomeDeadLettered)+" (refused)")
			e.deadLetters["postback_refused"]++
			return
		}
		add(net, goal, string(record.OutcomeDelivered))
	}
	for _, phase := range s.phases {
		for _, m := range phase {
			var v map[string]any
			if err := json.Unmarshal(m.Value, &v); err != nil {
				add("-", "-", string(record.OutcomeDeadLettered))
				e.deadLetters["undecodable"]++
				continue
			}
			id, _ := v["event_id"].(string)
			if v["currency"] != "XYZ" {
				// An event that fails validation is audited without its
				// id (see the pipeline's deadLetterInput); it is counted by
				// its dead letter's reason instead.
				e.events[id]++
			}
			click := v["click_id"].(string)
			net := network[v["merchant_id"].(string)]
			switch m.Topic {
			case config.DefaultTopicRegistrations:
				if params, ok := v["params"].(map[string]any); ok && params["offer_id"] == "expired" {
					expired[click] = true
				}
				goal := "reg"
				if v["kind"] == "trial" {
					goal = "trial"
				}
				sent(click, net, goal)
			case config.DefaultTopicDeposits:
				switch {
				case v["currency"] == "XYZ":
					add("-", "-", string(record.OutcomeDeadLettered))
					e.deadLetters["unknown_currency"]++
				case v["status"] != "succeeded":
					add("-", "-", string(record.OutcomeSkipped))
				case seenFTD[click] == id:
					add(net, "ftd", string(record.OutcomeDelivered)+" (replay)")
				case seenFTD[click] == "":
					seenFTD[click] = id
					deposited[click] = true
					sent(click, net, "ftd")
				default:
					sent(click, net, "rdep")
				}
			case config.DefaultTopicRevenue:
				if decimal.RequireFromString(v["amount"].(string)).IsNegative() {
					add(net, "revshare", string(record.OutcomeSkipped))
				} else {
					sent(click, net, "revshare")
				}
			case config.DefaultTopicQualifications:
				// Judged after every deposit: a qualification may come first.
				qualifications = append(qualifications, v)
			default:
				t.Fatalf("script writes to unexpected topic %s", m.Topic)
			}
		}
	}
	for _, q := range qualifications {
		click := q["click_id"].(string)
		if !deposited[click] {
			add("-", "ftd_status", string(record.OutcomeDeadLettered))
			e.deadLetters["orphan_qualification"]++
			continue
		}
		if _, twice := e.confirmations[click]; twice {
			t.Fatalf("script qualifies %s twice; expect does not model conflicts", click)
		}
		e.confirmations[click] = q["status"].(string)
		sent(click, network[q["merchant_id"].(string)], "ftd_status")
	}
	return e
}

// isStatusReplay reports an audit record of a status change re-emitted
// because its FTD was redelivered (see TestRun).
func isStatusReplay(a record.Audit) bool { return a.Replayed && a.Goal == "ftd_status" }

func TestRun(t *testing.T) {
	const players = 20
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Run(ctx, &out, Options{Players: players, Timeout: 50 * time.Second})
	if err != nil {
		t.Fatalf("Run: %v\noutput:\n%s", err, out.String())
	}
	want := expect(t, newScript(players))

	// A redelivered FTD whose delivery released a parked qualification
	// re-emits that status change: a replayed ftd_status audit record and
	// a second confirmation with the same postback id (pipeline/deliver.go,
	// the ClaimDelivered branch). Those are left out of the exact counts
	// below, which are the records' idempotency keys: audit by postback id
	// (or event id plus reason), confirmations by postback id.
	statusReplays := 0
	delivered := map[string]bool{}
	for _, a := range s.Audit {
		if a.Goal == "ftd_status" && a.Outcome == record.OutcomeDelivered && !a.Replayed {
			delivered[a.PostbackID] = true
		}
	}
	for _, a := range s.Audit {
		if isStatusReplay(a) {
			statusReplays++
			if !delivered[a.PostbackID] {
				t.Errorf("replayed status change %s was never delivered", a.PostbackID)
			}
		}
	}
	if statusReplays > 0 {
		t.Logf("%d status changes re-emitted for redelivered FTDs (replayed audit records and duplicate confirmations)", statusReplays)
	}

	total := 0
	for _, n := range want.events {
		total += n
	}
	total += want.deadLetters["undecodable"] + want.deadLetters["unknown_currency"]
	if s.Events != total {
		t.Errorf("Events = %d, want %d (the script's messages)", s.Events, total)
	}

	// The demo waits until every event of its script has an audit record
	// naming it; replays of redelivered events add records on top.
	got := map[string]int{}
	for _, a := range s.Audit {
		if a.EventID != "" && !isStatusReplay(a) {
			got[a.EventID]++
		}
	}
	var missing []string
	for id, n := range want.events {
		if got[id] < n {
			missing = append(missing, id)
		}
	}
	slices.Sort(missing)

	t.Run("one audit record per event", func(t *testing.T) {
		requireComplete(t, missing)
		if n := len(s.Audit) - statusReplays; n != s.Events {
			t.Errorf("%d audit records (leaving out %d status replays) for %d events", n, statusReplays, s.Events)
		}
		for id, n := range want.events {
			if got[id] != n {
				t.Errorf("event %s: %d audit records, want %d", id, got[id], n)
			}
		}
	})

	t.Run("outcomes by partner and goal", func(t *testing.T) {
		requireComplete(t, missing)
		counts := maps.Clone(s.Counts)
		delete(counts, [3]string{"scaleo", "ftd_status", "delivered (replay)"})
		if !maps.Equal(counts, want.counts) {
			for _, k := range sortedKeys(want.counts, counts) {
				if counts[k] != want.counts[k] {
					t.Errorf("%v: %d audit records, want %d", k, counts[k], want.counts[k])
				}
			}
		}
	})

	t.Run("one confirmation per casino player", func(t *testing.T) {
		requireComplete(t, missing)
		if len(want.confirmations) != players {
			t.Fatalf("expect found %d qualified casino players, want %d", len(want.confirmations), players)
		}
		byID := map[string]record.Confirmation{}
		for _, c := range s.Confirmations {
			if prev, ok := byID[c.PostbackID]; ok {
				if prev.ClickID != c.ClickID || prev.Status != c.Status || prev.FTDEventID != c.FTDEventID {
					t.Errorf("two confirmations with postback id %s differ: %+v and %+v", c.PostbackID, prev, c)
				}
				continue
			}
			byID[c.PostbackID] = c
		}
		if dups := len(s.Confirmations) - len(byID); dups != statusReplays {
			t.Errorf("%d duplicate confirmations for %d status replays", dups, statusReplays)
		}
		if len(byID) != players {
			t.Errorf("%d distinct confirmations, want %d", len(byID), players)
		}
		clicks := map[string]bool{}
		for _, c := range byID {
			if clicks[c.ClickID] {
				t.Errorf("click %s confirmed under two postback ids", c.ClickID)
			}
			clicks[c.ClickID] = true
			status, ok := want.confirmations[c.ClickID]
			switch {
			case !ok:
				t.Errorf("confirmation of unexpected click %s", c.ClickID)
			case c.Status != status:
				t.Errorf("click %s confirmed %s, want %s", c.ClickID, c.Status, status)
			}
			if c.Network != "scaleo" || c.MerchantID != "casino-1" || c.FTDEventID == "" || c.QualificationEventID == "" {
				t.Errorf("confirmation %+v lacks its network, merchant, FTD or qualification", c)
			}
		}
	})

	t.Run("dead letters by reason", func(t *testing.T) {
		for _, r := range []string{"undecodable", "unknown_currency", "orphan_qualification", "postback_refused"} {
			if want.deadLetters[r] == 0 {
				t.Errorf("the script produces no %s dead letter", r)
			}
		}
		requireComplete(t, missing)
		got := map[string]int{}
		for _, d := range s.DeadLetters {
			got[d.Reason]++
		}
		if !maps.Equal(got, want.deadLetters) {
			t.Errorf("dead letters by reason = %v, want %v", got, want.deadLetters)
		}
	})

	t.Run("tracker received what was accepted", func(t *testing.T) {
		requireComplete(t, missing)
		// The tracker records every 2xx answer: one per delivered postback
		// (a replay is not sent again), plus each attempt the dating
		// tracker answered 200 with an error body.
		var wantReceived int64
		for _, a := range s.Audit {
			switch {
			case a.Outcome == record.OutcomeDelivered && !a.Replayed:
				wantReceived++
			case a.Outcome == record.OutcomeDeadLettered && a.HTTPStatus >= 200 && a.HTTPStatus < 300:
				wantReceived += int64(a.Attempts)
			}
		}
		if s.Received != wantReceived {
			t.Errorf("tracker received %d postbacks, want %d", s.Received, wantReceived)
		}
	})

	t.Run("tokens redacted", func(t *testing.T) {
		// Every goal URL of the demo carries {token}.
		urls := 0
		for _, a := range s.Audit {
			if a.URL == "" {
				continue
			}
			urls++
			if !strings.Contains(a.URL, "=[REDACTED]") {
				t.Errorf("audit URL without the redacted token: %s", a.URL)
			}
		}
		if urls == 0 {
			t.Error("no audit record carries a URL")
		}
		records, err := json.Marshal([]any{s.Audit, s.DeadLetters, s.Confirmations})
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range demoSecrets {
			if bytes.Contains(records, []byte(secret)) {
				t.Errorf("an output record holds the token %s", secret)
			}
			if strings.Contains(out.String(), secret) {
				t.Errorf("the printed output holds the token %s", secret)
			}
		}
	})

	t.Run("printed size", func(t *testing.T) {
		// Every number about the demo's size comes from what it ran: the
		// script's journeys (one per player and merchant) and its messages.
		printed := out.String()
		if s.Players != 2*players {
			t.Errorf("Players = %d, want %d (%d per merchant, two merchants)", s.Players, 2*players, players)
		}
		for _, line := range []string{
			fmt.Sprintf("feeding %d player journeys (casino-1 %d, dating-1 %d), %d events in 2 phases\n", 2*players, players, players, total),
			fmt.Sprintf("\n%d player journeys, %d events → ", 2*players, total),
		} {
			if !strings.Contains(printed, line) {
				t.Errorf("output lacks %q:\n%s", line, printed)
			}
		}
	})

	t.Run("headline counts what the success rule accepted", func(t *testing.T) {
		requireComplete(t, missing)
		// The script has a body-level refusal: the dating tracker answers
		// 200 "ERROR offer expired" for offer "expired", which the
		// partner's success rule (body ^OK) refuses. The tracker counts
		// that 200; the headline must not.
		accepted, refused := 0, want.deadLetters["postback_refused"]
		for k, n := range want.counts {
			if k[2] == string(record.OutcomeDelivered) {
				accepted += n
			}
		}
		if refused == 0 {
			t.Fatal("the script scripts no refusal")
		}
		if s.Accepted != accepted || s.Refused != refused {
			t.Errorf("Accepted, Refused = %d, %d, want %d, %d", s.Accepted, s.Refused, accepted, refused)
		}
		if s.Received == int64(accepted) {
			t.Errorf("the tracker received %d, as many as were accepted: the refusals' 200s are not in it", s.Received)
		}
		headline := fmt.Sprintf("postbacks: %d accepted by the partner's success rule, %d refused", accepted, refused)
		if !strings.Contains(out.String(), headline) {
			t.Errorf("output lacks %q:\n%s", headline, out.String())
		}
	})

	t.Run("no carriage returns when not on a terminal", func(t *testing.T) {
		if strings.Contains(out.String(), "\r") {
			t.Errorf("output to a buffer holds \\r progress frames: %q", out.String())
		}
	})

	t.Run("printed summary", func(t *testing.T) {
		printed := out.String()
		header := fmt.Sprintf("%-10s  %-11s  %-23s  %6s\n", "partner", "goal", "outcome", "count")
		for _, s := range []string{
			fmt.Sprintf("%d events → %d audit records, %d confirmations, %d dead letters", s.Events, len(s.Audit), len(s.Confirmations), len(s.DeadLetters)),
			header,
			legend,
			"dead letters by reason:",
			"sample postbacks as audited (tokens redacted):",
			"/track/conv?click_id=",
			"/postback?goal=",
		} {
			if !strings.Contains(printed, s) {
				t.Errorf("output lacks %q:\n%s", s, printed)
			}
		}
	})
}

// requireComplete fails a check of the summary's totals when the demo
// stopped before every event was audited: its stop condition promises that
// every event of the script has an audit record naming it.
func requireComplete(t *testing.T, missing []string) {
	t.Helper()
	if len(missing) > 0 {
		t.Fatalf("the demo stopped before auditing %d event(s): %v", len(missing), missing)
	}
}

// TestRunStopsOnCancel: a cancelled context ends the demo with its error,
// promptly.
func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if _, err := Run(ctx, &bytes.Buffer{}, Options{Players: 5}); err == nil {
		t.Error("Run with a cancelled context returned no error")
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Run took %s to notice the cancel", d)
	}
}

func sortedKeys(ms ...map[[3]string]int) [][3]string {
	set := map[[3]string]bool{}
	for _, m := range ms {
		for k := range m {
			set[k] = true
		}
	}
	keys := make([][3]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [3]string) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return keys
}
