package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/postbackd/postbackd/internal/service"
)

const replayUsage = `usage: postbackd replay --config FILE [--reason R] [--partner P] [--since T] [--until T] [--dry-run]

Sends dead letters back to their input topics, where the running service
handles them again like any event: invalid input once its cause is fixed
(a merchant or partner added to the configuration), postbacks given up on
once the partner takes them again (after an outage, a fixed offer). A
postback's refusal is forgotten first (and its FTD's failure, so the
qualification replayed with it waits for it); one delivered since is
skipped. A replayed dead letter is remembered (redis.record_ttl), so a
second replay is a no-op, and the stable postback ids keep every send
single. It prints what it replayed and what it skipped, and why.

Times are RFC 3339 (2026-12-01T04:00:00Z) or a duration before now (6h).

flags:
`

func cmdReplay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := commandFlags("replay", replayUsage, stderr)
	reason := fs.String("reason", "", "only dead letters with this reason (e.g. postback_refused, max_age_exceeded, unknown_merchant)")
	partner := fs.String("partner", "", "only postbacks to this partner")
	since := fs.String("since", "", "only dead letters recorded at or after this time")
	until := fs.String("until", "", "only dead letters recorded before this time")
	dryRun := fs.Bool("dry-run", false, "list what would be replayed; write nothing")
	cfg, code := loadConfig(fs, args, getenv, stderr)
	if cfg == nil {
		return code
	}
	now := time.Now()
	o := service.ReplayOptions{Reason: *reason, Partner: *partner, DryRun: *dryRun}
	for _, f := range []struct {
		name, value string
		to          *time.Time
	}{{"--since", *since, &o.Since}, {"--until", *until, &o.Until}} {
		if f.value == "" {
			continue
		}
		t, err := parseTime(f.value, now)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", f.name, err)
			return 2
		}
		*f.to = t
	}
	if *partner != "" {
		if _, ok := cfg.Partners[*partner]; !ok {
			fmt.Fprintf(stderr, "--partner %q: not a partner of the configuration\n", *partner)
			return 2
		}
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "log: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	rep, err := service.Replay(ctx, cfg, log, o)
	if rep != nil {
		verb := "replayed"
		if rep.DryRun {
			verb = "would replay"
		}
		fmt.Fprintf(stdout, "read %d dead letters of %s; %d matched; %s %d, skipped %d\n",
			rep.Read, cfg.Topics.DLQ, len(rep.Items), verb, rep.Replayed(), len(rep.Items)-rep.Replayed())
		if len(rep.Items) > 0 {
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "dead letter\treason\tevent\tclick\tpostback\tto\toutcome")
			for _, it := range rep.Items {
				outcome := verb
				if it.Skipped != "" {
					outcome = "skipped: " + it.Skipped
				}
				pb := "-"
				if it.Goal != "" {
					pb = it.Goal + " to " + it.Partner
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.DLQ, it.Reason, orDash(it.EventID), orDash(it.ClickID), pb, orDash(it.Target), outcome)
			}
			_ = tw.Flush()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "replay: %v\n", err)
		return 1
	}
	return 0
}
