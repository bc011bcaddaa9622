package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/internal/service"
)

const inspectUsage = `usage: postbackd inspect --config FILE CLICK_ID

Prints what Redis holds about one click, for an analyst investigating a
disputed conversion: its context and route, its FTD record, the answer of
each deposit, the route memos, every postback id with its state (delivered,
refused, claimed), the parked qualification, waiting events, and the click's
scheduled jobs (retries, deadlines). It reads only. The audit topic holds
the full history: filter postbacks.dispatched on the click id.

On a Redis Cluster the click's keys are listed from its slot at once; on a
single node they are found with SCAN, which is linear in the keyspace
(about 4 seconds per million keys on a small machine).

flags:
`

func cmdInspect(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := commandFlags("inspect", inspectUsage, stderr)
	// The click id may come before or after the flags.
	var click string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		click, args = args[0], args[1:]
	}
	cfg, code := loadConfig(fs, args, getenv, stderr)
	if cfg == nil {
		return code
	}
	if click == "" && fs.NArg() == 1 {
		click = fs.Arg(0)
	}
	if click == "" || fs.NArg() > 1 {
		fmt.Fprintln(stderr, "want exactly one CLICK_ID")
		return 2
	}
	store, closeStore, err := service.OpenStore(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "redis: %v\n", err)
		return 1
	}
	defer closeStore()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute) // a single node is scanned
	defer cancel()
	st, err := store.Inspect(ctx, click)
	if err != nil {
		fmt.Fprintf(stderr, "redis: %v\n", err)
		return 1
	}
	printInspect(stdout, click, st, time.Now())
	return 0
}

func printInspect(w io.Writer, click string, st *dedupe.ClickState, now time.Time) {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "click %s (keys %s*)\n\n", click, st.KeyPrefix)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	if c := st.Context; c != nil {
		row("context", "merchant %s, network %s, params %s", orDash(c.MerchantID), orDash(c.Network), formatParams(c.Params))
		row("", "first seen %s, registered %s, forgotten in %s", ts(c.FirstSeenAt), ts(c.RegisteredAt), st.ContextTTL.Round(time.Second))
	} else {
		row("context", "none (no event named the click yet, or it expired)")
	}
	if f := st.FTD; f != nil {
		state := "undelivered"
		switch {
		case f.Delivered:
			state = "delivered"
		case f.Failure != "":
			state = "failed: " + f.Failure
		}
		row("FTD", "deposit %s, %s %s, occurred %s, %s", f.EventID, f.Amount, f.Currency, ts(f.OccurredAt), state)
		row("", "route %s via %s, params %s", orDash(f.Route.Partner), orDash(string(f.Route.Via)), formatParams(f.Route.Params))
		if f.Status != "" {
			row("", "status %s (qualification %s)", f.Status, f.StatusEventID)
		}
	} else {
		row("FTD", "none: the click's next succeeded deposit is its FTD")
	}
	for _, id := range sortedKeys(st.Answers) {
		row("deposit", "%s: %s", id, st.Answers[id])
	}
	for _, id := range sortedKeys(st.Routes) {
		row("route memo", "%s: %s via %s", id, st.Routes[id].Partner, st.Routes[id].Via)
	}
	if p := st.Parked; p != nil {
		row("qualification", "%s %s parked %s: %s", p.EventID, p.Status, ts(p.ParkedAt), orWord(p.Released, "waiting for the FTD"))
	}
	for _, p := range st.Orphans {
		row("orphan", "%s %s parked %s: dead-lettered, the FTD never came", p.EventID, p.Status, ts(p.ParkedAt))
	}
	waiting := sortedKeys(st.Waiting)
	for _, id := range waiting {
		row("waiting event", "%s: %s", id, map[bool]string{true: "waiting for the click's network or registration", false: "released"}[st.Waiting[id]])
	}
	_ = tw.Flush()

	fmt.Fprintf(w, "\npostbacks (%d)\n", len(st.Postbacks))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(st.Postbacks) > 0 {
		fmt.Fprintln(tw, "  postback id\tstate\tdetail")
	}
	for _, p := range st.Postbacks {
		switch d := p.Delivery; {
		case d != nil && d.Refused != "":
			fmt.Fprintf(tw, "  %s\trefused\t%s, %d attempts, %s; %s\n", p.ID, d.Refused, d.Attempts, ts(d.DeliveredAt), d.URL)
		case d != nil:
			fmt.Fprintf(tw, "  %s\tdelivered\tHTTP %d, %d attempts, %s; %s\n", p.ID, d.HTTPStatus, d.Attempts, ts(d.DeliveredAt), d.URL)
		default:
			fmt.Fprintf(tw, "  %s\tclaimed\ta send holds it for %s more\n", p.ID, p.Lease.Round(time.Millisecond))
		}
	}
	_ = tw.Flush()

	fmt.Fprintf(w, "\nscheduled (%d)\n", len(st.Jobs))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, j := range st.Jobs {
		var p struct {
			Kind     string `json:"kind"`
			Postback *struct {
				ID       string `json:"id"`
				Goal     string `json:"goal"`
				Partner  string `json:"partner"`
				Attempts int    `json:"attempts"`
			} `json:"postback"`
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(j.Payload, &p)
		detail := p.EventID
		if pb := p.Postback; pb != nil {
			detail = fmt.Sprintf("postback %s (%s to %s, %d attempts so far)", pb.ID, pb.Goal, pb.Partner, pb.Attempts)
		}
		fmt.Fprintf(tw, "  %s\t%s\tdue %s (%s)\t%s\n", j.ID, orDash(p.Kind), ts(j.Due), relative(j.Due, now), detail)
	}
	_ = tw.Flush()
}

func relative(t, now time.Time) string {
	if d := t.Sub(now).Round(time.Second); d >= 0 {
		return "in " + d.String()
	} else {
		return (-d).String() + " ago"
	}
}

func formatParams(p map[string]string) string {
	if len(p) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + p[k]
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string { return orWord(s, "-") }

func orWord(s, word string) string {
	if s == "" {
		return word
	}
	return s
}
