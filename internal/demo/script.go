package demo

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/config"
)

// script is the demo's input: phases of Kafka messages, each phase produced
// once the outcomes of the previous one are audited.
type script struct {
	phases [][]kafka.Message
	// ids[i] are the event ids of phase i, and unreadable[i] counts its
	// messages too broken to have one. Every event of the script ends in at
	// least one audit record naming it (replays of redelivered events add
	// more), so a phase is done when each id has been audited.
	ids        [][]string
	unreadable []int
	// journeys counts the player journeys by merchant: one per registration
	// in the script (each journey starts with its click's registration).
	journeys map[string]int
}

// players is the number of player journeys in the script, all merchants.
func (s *script) players() int {
	n := 0
	for _, j := range s.journeys {
		n += j
	}
	return n
}

// size describes the script as the demo prints it, from what it holds:
// "400 player journeys (casino-1 200, dating-1 200), 1858 events in 2 phases".
func (s *script) size() string {
	merchants := make([]string, 0, len(s.journeys))
	for m := range s.journeys {
		merchants = append(merchants, m)
	}
	sort.Strings(merchants)
	per := make([]string, len(merchants))
	for i, m := range merchants {
		per[i] = fmt.Sprintf("%s %d", m, s.journeys[m])
	}
	return fmt.Sprintf("%d player journeys (%s), %d events in %d phases",
		s.players(), strings.Join(per, ", "), s.total(), len(s.phases))
}

func (s *script) total() int {
	n := 0
	for _, p := range s.phases {
		n += len(p)
	}
	return n
}

// done reports whether every event of phases 0..phase has been audited,
// given the audited event ids and the number of audit records without one.
func (s *script) done(phase int, audited map[string]bool, withoutID int) bool {
	want := 0
	for i := 0; i <= phase; i++ {
		for _, id := range s.ids[i] {
			if !audited[id] {
				return false
			}
		}
		want += s.unreadable[i]
	}
	return withoutID >= want
}

// newScript builds journeys for players per merchant: a casino player
// (hybrid deal) registers, deposits (some fail), deposits again, earns
// revenue and is qualified — every 10th before the deposit arrives; a dating
// player arrives with a tracker string, signs up and rebills. A few events
// are broken on purpose.
func newScript(players int) *script {
	rng := rand.New(rand.NewPCG(7, 11))
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var regs, rest []kafka.Message
	n := 0
	msg := func(topic, click string, v map[string]any) kafka.Message {
		n++
		at = at.Add(time.Second)
		v["event_id"] = fmt.Sprintf("ev-%06d", n)
		v["occurred_at"] = at.Format(time.RFC3339)
		v["click_id"] = click
		b, _ := json.Marshal(v)
		return kafka.Message{Topic: topic, Key: []byte(click), Value: b}
	}
	for i := 0; i < players; i++ {
		click := fmt.Sprintf("cas-%04d", i)
		regs = append(regs, msg(config.DefaultTopicRegistrations, click, map[string]any{
			"merchant_id": "casino-1", "kind": "registration", "player_id": "p" + click,
			"params": map[string]string{"custom2": fmt.Sprintf("campaign-%d", i%5)},
		}))
		deposit := func(amount, status string) kafka.Message {
			return msg(config.DefaultTopicDeposits, click, map[string]any{
				"merchant_id": "casino-1", "amount": amount, "currency": []string{"EUR", "USD", "JPY"}[i%3],
				"status": status, "player_id": "p" + click, "payment_method": "card",
			})
		}
		qualify := msg(config.DefaultTopicQualifications, click, map[string]any{
			"merchant_id": "casino-1", "status": []string{"approved", "rejected"}[rng.IntN(4)/3],
		})
		if i%10 == 0 {
			rest = append(rest, qualify) // before its deposit: it waits
		}
		if rng.IntN(5) == 0 {
			rest = append(rest, deposit("25.00", "failed"))
		}
		ftd := deposit(fmt.Sprintf("%d.%02d", 10+rng.IntN(90), rng.IntN(100)), "succeeded")
		rest = append(rest, ftd)
		if i%7 == 0 {
			rest = append(rest, ftd) // the payments platform redelivers it
		}
		for k := 0; k < 1+rng.IntN(3); k++ {
			rest = append(rest, deposit(fmt.Sprintf("%d.00", 20+rng.IntN(200)), "succeeded"))
		}
		rest = append(rest, msg(config.DefaultTopicRevenue, click, map[string]any{
			"merchant_id": "casino-1", "amount": fmt.Sprintf("%d.50", rng.IntN(100)-20), "currency": "EUR",
		}))
		if i%10 != 0 {
			rest = append(rest, qualify)
		}
	}
	for i := 0; i < players; i++ {
		click := fmt.Sprintf("dat-%04d", i)
		offer := []string{"pps-gold", "rs-silver", "pps-bronze"}[i%3]
		if i%25 == 0 {
			offer = "expired"
		}
		kind := "registration"
		if i%2 == 0 {
			kind = "trial"
		}
		regs = append(regs, msg(config.DefaultTopicRegistrations, click, map[string]any{
			"merchant_id": "dating-1", "kind": kind,
			"params": map[string]string{
				"tr":       fmt.Sprintf("trID_%d_aff%d-tx%d-c%d-x%d_trID", 1000000+i, i%13, i, i, i%4),
				"offer_id": offer,
			},
		}))
		for k := 0; k < 1+i%3; k++ { // signup, then rebills
			rest = append(rest, msg(config.DefaultTopicDeposits, click, map[string]any{
				"merchant_id": "dating-1", "amount": "29.99", "currency": "USD", "status": "succeeded", "player_id": "p" + click,
			}))
		}
	}
	// Broken input: it goes to the DLQ with its reason; the stream goes on.
	rest = append(rest,
		kafka.Message{Topic: config.DefaultTopicDeposits, Key: []byte("cas-0001"), Value: []byte(`{"event_id": "broken-1", "amount": 12.5`)},
		msg(config.DefaultTopicDeposits, "cas-0002", map[string]any{"merchant_id": "casino-1", "amount": "10.00", "currency": "XYZ", "status": "succeeded", "player_id": "p"}),
		msg(config.DefaultTopicQualifications, "never-deposited", map[string]any{"merchant_id": "casino-1", "status": "approved"}),
	)
	sc := &script{phases: [][]kafka.Message{regs, rest}, journeys: map[string]int{}}
	for _, m := range regs {
		var v struct {
			MerchantID string `json:"merchant_id"`
		}
		if json.Unmarshal(m.Value, &v) == nil {
			sc.journeys[v.MerchantID]++
		}
	}
	for _, phase := range sc.phases {
		var ids []string
		unreadable := 0
		for _, m := range phase {
			var v struct {
				EventID string `json:"event_id"`
			}
			if json.Unmarshal(m.Value, &v) != nil || v.EventID == "" {
				unreadable++
				continue
			}
			ids = append(ids, v.EventID)
		}
		sc.ids = append(sc.ids, ids)
		sc.unreadable = append(sc.unreadable, unreadable)
	}
	return sc
}
