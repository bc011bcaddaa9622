package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/dispatcher"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/postback"
)

const sendTestUsage = `usage: postbackd send-test --config FILE --partner NAME [--goal GOAL] [flags]

Sends one clearly marked test postback to the partner's real endpoint, as
partners ask before going live, and shows the answer and whether the
partner's success rule accepts it. Its click id, event id and transaction id
start with "postbackd-test-" and carry random hex, so they cannot collide
with real ones. Nothing is read from or written to Kafka or Redis.

A tracker-string partner needs the tracker string its test link produced:
pass it with --param (e.g. --param tr=trID_..._trID --param offer_id=42).

flags:
`

// testIDPrefix starts every id of a test postback.
const testIDPrefix = "postbackd-test-"

func cmdSendTest(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := commandFlags("send-test", sendTestUsage, stderr)
	partner := fs.String("partner", "", "the partner to send to (a key of partners)")
	goalFlag := fs.String("goal", "", "the goal to send (default: ftd, or the partner's first configured goal)")
	amountFlag := fs.String("amount", "1.00", "amount of an ftd, rdep, ftd_status or revshare postback")
	currency := fs.String("currency", "EUR", "ISO 4217 currency of the amount")
	status := fs.String("status", "approved", "status of an ftd_status postback: approved or rejected")
	params := paramFlags{}
	fs.Var(params, "param", "a click param, key=value (repeatable; e.g. the tracker string)")
	cfg, code := loadConfig(fs, args, getenv, stderr)
	if cfg == nil {
		return code
	}
	p, ok := cfg.Partners[*partner]
	if !ok {
		fmt.Fprintf(stderr, "--partner %q: not a partner of the configuration (partners: %s)\n", *partner, strings.Join(sortedKeys(cfg.Partners), ", "))
		return 2
	}
	goal := postback.Goal(*goalFlag)
	if goal == "" {
		for _, g := range postback.Goals {
			if _, ok := p.Goals[g]; ok && (goal == "" || g == postback.GoalFTD) {
				goal = g
			}
		}
	}
	if _, ok := p.Goals[goal]; !ok {
		fmt.Fprintf(stderr, "--goal %q: partner %s has no such goal (it has: %s)\n", goal, *partner, strings.Join(goalNames(p.Goals), ", "))
		return 2
	}
	amount, err := decimal.NewFromString(*amountFlag)
	if err != nil {
		fmt.Fprintf(stderr, "--amount %q: %v\n", *amountFlag, err)
		return 2
	}
	if _, ok := event.MinorUnits(*currency); !ok {
		fmt.Fprintf(stderr, "--currency %q: not an ISO 4217 code\n", *currency)
		return 2
	}
	pb, err := testPostback(*partner, goal, *status, amount, *currency, params)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	disp, err := dispatcher.New(cfg.Partners, dispatcher.Options{})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer disp.CloseIdleConnections()
	fmt.Fprintf(stdout, "test postback to %s, goal %s", *partner, goal)
	if pb.Status != "" {
		fmt.Fprintf(stdout, ", status %s", pb.Status)
	}
	fmt.Fprintf(stdout, "\n  click_id        %s\n  transaction_id  %s\n", pb.ClickID, pb.ID)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res := disp.Send(ctx, pb)
	if res.URL != "" {
		fmt.Fprintf(stdout, "  url             %s\n", res.URL)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stdout, "  warning         %s\n", w)
	}
	if res.HTTPStatus != 0 {
		fmt.Fprintf(stdout, "answer: HTTP %d in %s (%d attempts)\n", res.HTTPStatus, res.Latency.Round(time.Millisecond), res.Attempts)
	} else {
		fmt.Fprintf(stdout, "answer: none (%d attempts)\n", res.Attempts)
	}
	if res.Delivered {
		fmt.Fprintln(stdout, "accepted by the partner's success rule: yes")
		return 0
	}
	fmt.Fprintf(stdout, "accepted by the partner's success rule: no: %v\n", res.Err)
	return 1
}

// testPostback is a postback whose ids cannot be a real conversion's.
func testPostback(partner string, goal postback.Goal, status string, amount decimal.Decimal, currency string, params map[string]string) (postback.Postback, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return postback.Postback{}, err
	}
	id := testIDPrefix + hex.EncodeToString(b)
	now := time.Now()
	pb := postback.Postback{
		ID: id, Partner: partner, Goal: goal, Merchant: "postbackd-test", ClickID: id, EventID: id, PlayerID: id,
		Params: params, OccurredAt: now, CreatedAt: now,
	}
	switch goal {
	case postback.GoalFTD:
		pb.Status = postback.StatusPending
	case postback.GoalFTDStatus:
		if status != postback.StatusApproved && status != postback.StatusRejected {
			return postback.Postback{}, fmt.Errorf("--status %q: want approved or rejected", status)
		}
		pb.Status, pb.FTDEventID = status, id
	}
	switch goal {
	case postback.GoalFTD, postback.GoalRD, postback.GoalFTDStatus, postback.GoalRevshare:
		pb.HasAmount, pb.Amount, pb.Currency = true, amount, currency
	}
	return pb, nil
}

func goalNames[V any](goals map[postback.Goal]V) []string {
	var out []string
	for _, g := range postback.Goals {
		if _, ok := goals[g]; ok {
			out = append(out, string(g))
		}
	}
	return out
}
