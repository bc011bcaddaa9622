package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/internal/service"
)

const rebuildUsage = `usage: postbackd rebuild-state --config FILE [--rewind-to TIME] [--dry-run]

Rebuilds postbackd's Redis state from the audit topic after Redis lost data:
FTD records (with their route and status), the final outcome of every
postback still within redis.record_ttl, classification answers, route memos
and click contexts. What Redis already holds is kept; only what it lacks is
added, so a second run changes nothing.

Stop every postbackd of the consumer group first: the rebuild refuses to
write while the group has members.

What was only in flight at the loss (events waiting for their click's
network, qualifications waiting for their FTD, scheduled retries) is not in
the audit. --rewind-to moves the group back so that the service derives it
again from the input topics; re-consumed events whose postbacks were
delivered are not sent again (their outcomes are restored), they are
audited again with replayed=true. Rewind at least to the time of the loss
minus the longest wait (qualification.window, attribution_wait); the rewind
also reaches back, partition by partition, to the events of the postbacks
whose retries were pending.

flags:
`

func cmdRebuildState(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := commandFlags("rebuild-state", rebuildUsage, stderr)
	dryRun := fs.Bool("dry-run", false, "read and report; write nothing to Redis, move no offset")
	rewind := fs.String("rewind-to", "", "move the group's input offsets back to this time: RFC 3339 (2026-12-01T04:00:00Z) or a duration before now (6h)")
	cfg, code := loadConfig(fs, args, getenv, stderr)
	if cfg == nil {
		return code
	}
	now := time.Now()
	var rewindTo time.Time
	if *rewind != "" {
		t, err := parseTime(*rewind, now)
		if err != nil {
			fmt.Fprintf(stderr, "--rewind-to: %v\n", err)
			return 2
		}
		rewindTo = t
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "log: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	rep, err := service.RebuildState(ctx, cfg, log, service.RebuildOptions{DryRun: *dryRun, RewindTo: rewindTo, Now: func() time.Time { return now }})
	if rep != nil {
		printRebuild(stdout, cfg.Topics.Dispatched, cfg.Kafka.GroupID, rewindTo, rep)
	}
	if err != nil {
		fmt.Fprintf(stderr, "rebuild-state: %v\n", err)
		if errors.Is(err, service.ErrGroupActive) {
			return 2
		}
		return 1
	}
	return 0
}

// parseRewind reads an RFC 3339 time or a duration before now.
func parseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		if t.After(now) {
			return time.Time{}, fmt.Errorf("%s is in the future", s)
		}
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time or a positive duration", s)
	}
	return now.Add(-d), nil
}

func printRebuild(w io.Writer, topic, group string, rewindTo time.Time, r *service.RebuildReport) {
	mode := "restored"
	if r.DryRun {
		mode = "would restore (dry run: nothing written)"
	}
	fmt.Fprintf(w, "read %d audit records of %s (%d unreadable), %d clicks\n", r.AuditRecords, topic, r.Unreadable, r.Clicks)
	var ftds []string
	for _, k := range []dedupe.FTDRestore{"would restore", dedupe.FTDCreated, dedupe.FTDMerged, dedupe.FTDKept, dedupe.FTDConflict} {
		if n := r.FTDs[k]; n > 0 {
			ftds = append(ftds, fmt.Sprintf("%d %s", n, k))
		}
	}
	if len(ftds) == 0 {
		ftds = []string{"none"}
	}
	fmt.Fprintf(w, "%s:\n  FTD records: %s\n  click contexts: %d\n  classification answers: %d\n  route memos: %d\n  final postback outcomes: %d\n",
		mode, strings.Join(ftds, ", "), r.Contexts, r.Answers, r.Routes, r.Deliveries)
	if len(r.Conflicts) > 0 {
		fmt.Fprintf(w, "WARNING: %d clicks hold another FTD than the audit's first (classified after the loss; their FTD was paid twice), left as they are:\n", len(r.Conflicts))
		for _, id := range sortedKeys(r.Conflicts) {
			fmt.Fprintf(w, "  click %s: Redis holds FTD %s\n", id, r.Conflicts[id])
		}
	}
	if len(r.SecondFTDs) > 0 {
		fmt.Fprintf(w, "WARNING: %d clicks were audited with more than one FTD (an earlier loss); the first is restored:\n", len(r.SecondFTDs))
		for _, id := range sortedKeys(r.SecondFTDs) {
			fmt.Fprintf(w, "  click %s: later FTDs %s\n", id, strings.Join(r.SecondFTDs[id], ", "))
		}
	}
	if r.Pending > 0 {
		if rewindTo.IsZero() {
			fmt.Fprintf(w, "WARNING: %d postbacks were waiting for a retry scheduled in Redis; rerun with --rewind-to (any time: the rewind also reaches back to their events) to send them\n", r.Pending)
		} else {
			fmt.Fprintf(w, "pending retries: %d, their events in %d partitions: the rewind reaches them\n", r.Pending, len(r.PendingFrom))
		}
	}
	if r.Legacy > 0 {
		fmt.Fprintf(w, "note: %d postback records predate audit records with params: the routes of their clicks are restored, their params only from later records\n", r.Legacy)
	}
	if !rewindTo.IsZero() {
		verb := "rewound"
		if r.DryRun {
			verb = "would rewind"
		}
		fmt.Fprintf(w, "%s group %s to %s: %d partitions\n", verb, group, rewindTo.UTC().Format(time.RFC3339), len(r.Rewound))
		for _, p := range r.Rewound {
			fmt.Fprintf(w, "  %s/%d: %d -> %d\n", p.Topic, p.Partition, p.From, p.To)
		}
		if len(r.Uncommitted) > 0 {
			var names []string
			for _, p := range r.Uncommitted {
				names = append(names, fmt.Sprintf("%s/%d", p.Topic, p.Partition))
			}
			fmt.Fprintf(w, "  never committed by the group, left to consumer.start_offset (earliest: read from their start; latest: what they hold now is skipped): %s\n",
				strings.Join(names, ", "))
		}
	}
}

// sortedKeys are m's keys in order.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
