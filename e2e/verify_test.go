package e2e

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/record"
)

// Final outcomes: what a postback ends as. "failed" is an intermediate
// outcome (handed to the delayed path) and may precede either.
func finalOutcome(o record.Outcome) bool {
	return o == record.OutcomeDelivered || o == record.OutcomeDeadLettered || o == record.OutcomeSkipped
}

// progress says what of the oracle is still missing; empty when complete.
func (e *testEnv) progress(sc *script, out outputSnapshot) []string {
	var missing []string
	got := e.tracker.snapshot()
	finals := map[string]map[record.Outcome]bool{}
	skips := map[string]map[string]bool{}
	for _, a := range out.audits {
		k := pbKey(a.rec.Goal, a.rec.Status, a.rec.EventID)
		if finals[k] == nil {
			finals[k] = map[record.Outcome]bool{}
		}
		finals[k][a.rec.Outcome] = true
		if a.rec.Outcome == record.OutcomeSkipped {
			if skips[a.rec.EventID] == nil {
				skips[a.rec.EventID] = map[string]bool{}
			}
			skips[a.rec.EventID][a.rec.Reason] = true
		}
	}
	var notSent []string
	for k, p := range sc.postbacks {
		if p.outcome == "delivered" && len(got[k]) == 0 {
			notSent = append(notSent, k+" ("+p.click+")")
		}
	}
	if len(notSent) > 0 {
		sort.Strings(notSent)
		missing = append(missing, fmt.Sprintf("%d postbacks not yet accepted by the tracker (%s)",
			len(notSent), strings.Join(notSent[:min(len(notSent), 8)], ", ")))
	}
	n := 0
	n = 0
	for k, p := range sc.postbacks {
		if !finals[k][record.Outcome(p.outcome)] {
			n++
		}
	}
	if n > 0 {
		missing = append(missing, fmt.Sprintf("%d postbacks without their final audit record", n))
	}
	n = 0
	for id, reason := range sc.skips {
		if !skips[id][reason] {
			n++
		}
	}
	if n > 0 {
		missing = append(missing, fmt.Sprintf("%d skipped outcomes not audited", n))
	}
	dlq := map[string]bool{}
	for _, d := range out.dlq {
		dlq[d.Reason+" "+dlqRef(d.EventID, d.Value)] = true
	}
	var lost []string
	for ref, reason := range sc.dlq {
		if !dlq[reason+" "+ref] {
			lost = append(lost, reason+" "+ref)
		}
	}
	if len(lost) > 0 {
		sort.Strings(lost)
		missing = append(missing, fmt.Sprintf("%d dead letters missing (%s)", len(lost), strings.Join(lost[:min(len(lost), 8)], ", ")))
	}
	conf := map[string]bool{}
	for _, c := range out.confirms {
		conf[c.ClickID] = true
	}
	n = 0
	for click := range sc.confirms {
		if !conf[click] {
			n++
		}
	}
	if n > 0 {
		missing = append(missing, fmt.Sprintf("%d confirmations missing", n))
	}
	return missing
}

// waitComplete waits until every expectation of the oracle is met, failing
// early if a member that should run has exited.
func (e *testEnv) waitComplete(sc *script, out *outputs, timeout time.Duration, running ...*member) {
	e.t.Helper()
	var missing []string
	ok := waitFor(timeout, func() bool {
		for _, m := range running {
			if m.exited() {
				return true
			}
		}
		missing = e.progress(sc, out.snapshot())
		return len(missing) == 0
	})
	for _, m := range running {
		if m.exited() {
			e.t.Fatalf("%s exited with %d while the stream was being processed\n%s", m.name, m.code, tail(m.stderr, 40))
		}
	}
	if !ok {
		e.t.Fatalf("oracle not met within %s: %s", timeout, strings.Join(missing, "; "))
	}
}

type verifyOptions struct {
	// txDuplicatesAllowed: a process was killed, so a postback may have been
	// accepted twice, with the same transaction id (the documented window
	// between send and mark). Without it, any repeat is an error.
	txDuplicatesAllowed bool
	// exactOutputs: nothing crashed, so no DLQ record may appear twice.
	exactOutputs bool
}

type verdict struct {
	// counts: the oracle's findings by category (lost, unexpected,
	// misclassified, misrouted, out_of_order, audit_missing, audit_wrong,
	// confirm_missing, confirm_extra, dlq_missing, dlq_unexpected,
	// dup_other); each is also a test error.
	counts     map[string]int
	duplicates []string // keys accepted more than once (same transaction id)
	// firstArrivals: when the first accepted copy of each duplicate arrived.
	firstArrivals map[string]time.Time
}

// verify checks the complete outputs against the oracle. Call it after the
// members stopped and the output reader caught up.
func (e *testEnv) verify(sc *script, out outputSnapshot, o verifyOptions) verdict {
	t := e.t
	t.Helper()
	v := verdict{firstArrivals: map[string]time.Time{}, counts: map[string]int{}}
	cat := "other"
	errorf := func(format string, args ...any) {
		t.Helper()
		v.counts[cat]++
		t.Errorf(format, args...)
	}
	if len(out.bad) > 0 {
		errorf("output records that do not parse: %v", out.bad)
	}

	// 1. The tracker: every expected postback accepted exactly once (or,
	// after a kill, repeated only with the same transaction id), with the
	// right values; nothing else accepted.
	got := e.tracker.snapshot()
	txOfKey := map[string]string{}
	for k, reqs := range got {
		p, ok := sc.postbacks[k]
		if !ok || p.outcome != "delivered" {
			cat = "unexpected"
			// An rdep where an ftd was expected (or the reverse) is a
			// misclassification, not only a stranger.
			if parts := strings.SplitN(k, "|", 3); len(parts) == 3 && (parts[0] == "rdep" || parts[0] == "ftd") {
				other := pbKey(map[string]string{"rdep": "ftd", "ftd": "rdep"}[parts[0]], map[string]string{"rdep": "pending", "ftd": ""}[parts[0]], parts[2])
				if _, exp := sc.postbacks[other]; exp {
					cat = "misclassified"
				}
			}
			errorf("tracker accepted an unexpected postback %s (%d times): %s", k, len(reqs), reqs[0].query.Encode())
			continue
		}
		tx := reqs[0].txOf()
		txOfKey[k] = tx
		cat = "misrouted"
		if tx == "" {
			errorf("postback %s carried no transaction id", k)
		}
		if len(reqs) > 1 {
			for _, r := range reqs[1:] {
				if r.txOf() != tx {
					cat = "dup_other"
					errorf("postback %s accepted twice with different transaction ids %q and %q", k, tx, r.txOf())
				}
			}
			if !o.txDuplicatesAllowed {
				cat = "dup_unallowed"
				errorf("postback %s accepted %d times", k, len(reqs))
			}
			v.duplicates = append(v.duplicates, k)
			v.firstArrivals[k] = reqs[0].arrived
		}
		v.counts["misrouted"] += e.checkRequest(p, reqs[0])
	}
	for k, p := range sc.postbacks {
		if p.outcome == "delivered" && len(got[k]) == 0 {
			cat = "lost"
			errorf("postback %s (click %s) never accepted by the tracker", k, p.click)
		}
	}

	// 2. Order per click: the FTD before its status change.
	for _, pair := range sc.ordered {
		ftd, st := got[pair[0]], got[pair[1]]
		if len(ftd) > 0 && len(st) > 0 && ftd[0].seq > st[0].seq {
			cat = "out_of_order"
			errorf("status change %s accepted before its FTD %s", pair[1], pair[0])
		}
	}

	// 3. The audit trail, deduplicated by postback id: one final outcome per
	// postback, the expected one, consistent values, no secret.
	type pbAudit struct {
		finals map[record.Outcome]bool
		keys   map[string]bool
		first  record.Audit
	}
	byPID := map[string]*pbAudit{}
	pidOfKey := map[string]map[string]bool{}
	cat = "audit_wrong"
	for _, a := range out.audits {
		r := a.rec
		for _, tok := range e.tokens {
			if strings.Contains(string(a.raw), tok) {
				errorf("audit record of event %s carries a partner token", r.EventID)
			}
		}
		if r.ClickID != "" && a.key != r.ClickID {
			errorf("audit record of event %s keyed %q, want its click_id %q", r.EventID, a.key, r.ClickID)
		}
		if r.PostbackID == "" {
			continue
		}
		pa := byPID[r.PostbackID]
		if pa == nil {
			pa = &pbAudit{finals: map[record.Outcome]bool{}, keys: map[string]bool{}, first: r}
			byPID[r.PostbackID] = pa
		}
		if finalOutcome(r.Outcome) {
			pa.finals[r.Outcome] = true
		}
		k := pbKey(r.Goal, r.Status, r.EventID)
		pa.keys[k] = true
		if pidOfKey[k] == nil {
			pidOfKey[k] = map[string]bool{}
		}
		pidOfKey[k][r.PostbackID] = true
		if r.ClickID != pa.first.ClickID || r.Goal != pa.first.Goal || r.Status != pa.first.Status || r.Amount != pa.first.Amount || r.Currency != pa.first.Currency {
			errorf("postback %s audited with differing values: %+v vs %+v", r.PostbackID, r, pa.first)
		}
		if r.URL != "" && !strings.Contains(r.URL, "[REDACTED]") {
			errorf("postback %s audited with a URL that does not redact the token: %s", r.PostbackID, r.URL)
		}
	}
	for pid, pa := range byPID {
		if len(pa.finals) > 1 {
			errorf("postback %s has different final outcomes %v", pid, pa.finals)
		}
		if pa.finals[record.OutcomeDelivered] {
			expected := false
			for k := range pa.keys {
				if p, ok := sc.postbacks[k]; ok && p.outcome == "delivered" {
					expected = true
				}
			}
			if !expected {
				errorf("postback %s (%v) audited as delivered but not expected", pid, pa.keys)
			}
		}
	}
	for k, p := range sc.postbacks {
		cat = "audit_missing"
		pids := pidOfKey[k]
		if len(pids) != 1 {
			errorf("postback %s has %d postback ids in the audit trail, want 1", k, len(pids))
			continue
		}
		var pid string
		for id := range pids {
			pid = id
		}
		pa := byPID[pid]
		if !pa.finals[record.Outcome(p.outcome)] {
			errorf("postback %s (%s): no %s audit record; final outcomes %v", k, pid, p.outcome, pa.finals)
		}
		cat = "audit_wrong"
		if tx, ok := txOfKey[k]; ok && tx != pid {
			errorf("postback %s: the tracker received transaction id %s, the audit says %s", k, tx, pid)
		}
		if p.amount != "" && !decimalEqual(pa.first.Amount, p.amount) {
			errorf("postback %s audited with amount %q, want %s", k, pa.first.Amount, p.amount)
		}
		if pa.first.Currency != p.currency || pa.first.ClickID != p.click || pa.first.Network != p.partner {
			errorf("postback %s audited as click %q network %q currency %q, want %q %q %q", k,
				pa.first.ClickID, pa.first.Network, pa.first.Currency, p.click, p.partner, p.currency)
		}
	}
	skips := map[string]map[string]bool{}
	for _, a := range out.audits {
		if a.rec.Outcome == record.OutcomeSkipped {
			if skips[a.rec.EventID] == nil {
				skips[a.rec.EventID] = map[string]bool{}
			}
			skips[a.rec.EventID][a.rec.Reason] = true
		}
	}
	cat = "audit_missing"
	for id, reason := range sc.skips {
		if !skips[id][reason] {
			errorf("event %s: no skipped audit record with reason %q (got %v)", id, reason, skips[id])
		}
	}
	for id, reasons := range skips {
		cat = "audit_extra"
		if _, ok := sc.skips[id]; !ok && !(len(reasons) == 1 && reasons[sc.maybeSkips[id]]) {
			errorf("event %s skipped unexpectedly: %v", id, reasons)
		}
	}

	// 4. Confirmations: exactly the expected clicks, one postback each.
	confPIDs := map[string]map[string]bool{}
	for _, c := range out.confirms {
		cat = "confirm_extra"
		exp, ok := sc.confirms[c.ClickID]
		if !ok {
			errorf("unexpected confirmation for click %s: %+v", c.ClickID, c)
			continue
		}
		if c.Status != exp.status || c.Currency != exp.currency || !decimalEqual(c.Amount, exp.amount) {
			errorf("confirmation of click %s is %s %s %s, want %s %s %s", c.ClickID, c.Status, c.Amount, c.Currency, exp.status, exp.amount, exp.currency)
		}
		if confPIDs[c.ClickID] == nil {
			confPIDs[c.ClickID] = map[string]bool{}
		}
		confPIDs[c.ClickID][c.PostbackID] = true
	}
	cat = "confirm_missing"
	for click := range sc.confirms {
		if len(confPIDs[click]) != 1 {
			errorf("click %s has confirmations for %d postbacks, want 1", click, len(confPIDs[click]))
		}
	}

	// 5. Dead letters: exactly the expected reasons per event.
	dlqCount := map[string]int{}
	for _, d := range out.dlq {
		ref := dlqRef(d.EventID, d.Value)
		for _, tok := range e.tokens {
			if strings.Contains(d.Error, tok) || strings.Contains(fmt.Sprint(d.Postback), tok) {
				errorf("dead letter of %s carries a partner token", ref)
			}
		}
		cat = "dlq_unexpected"
		want, ok := sc.dlq[ref]
		switch {
		case !ok:
			errorf("unexpected dead letter %s for %s: %s", d.Reason, ref, d.Error)
		case want != d.Reason:
			errorf("dead letter of %s has reason %s, want %s (%s)", ref, d.Reason, want, d.Error)
		}
		dlqCount[ref]++
	}
	cat = "dlq_missing"
	for ref, reason := range sc.dlq {
		switch n := dlqCount[ref]; {
		case n == 0:
			errorf("no dead letter (%s) for %s", reason, ref)
		case n > 1 && o.exactOutputs && !(n == 2 && sc.redelivered[ref]):
			errorf("%d dead letters for %s, want 1", n, ref)
		}
	}
	sort.Strings(v.duplicates)
	return v
}

// checkRequest compares one accepted request with its expected postback and
// returns how many of its values were wrong (each a test error).
func (e *testEnv) checkRequest(p *expPostback, r accepted) int {
	wrong := 0
	t := e.t
	t.Helper()
	errorf := func(format string, args ...any) {
		t.Helper()
		wrong++
		t.Errorf(format, args...)
	}
	q := r.query
	if q.Get("click_id") != p.click {
		errorf("postback %s sent for click %q, want %q", p.key, q.Get("click_id"), p.click)
	}
	if q.Get("amount") != p.amount || q.Get("currency") != p.currency {
		errorf("postback %s sent amount %q %q, want %q %q", p.key, q.Get("amount"), q.Get("currency"), p.amount, p.currency)
	}
	switch p.partner {
	case partnerScaleo:
		if q.Get("token") != e.tokens[scaleoTokenEnv] {
			errorf("postback %s sent without the partner's token", p.key)
		}
		wantPath := "/track/conv"
		if p.goal == "ftd_status" {
			wantPath = "/track/conv-change"
		}
		if r.path != wantPath {
			errorf("postback %s sent to %s, want %s", p.key, r.path, wantPath)
		}
	case partnerDating:
		if q.Get("key") != e.tokens[datingTokenEnv] {
			errorf("postback %s sent without the partner's token", p.key)
		}
		alias := map[string]string{"reg": "free_reg", "trial": "trial", "ftd": "signup", "rdep": "rebill"}[p.goal]
		if q.Get("goal") != alias {
			errorf("postback %s sent goal alias %q, want %q", p.key, q.Get("goal"), alias)
		}
		for f, want := range p.tr {
			if q.Get(f) != want {
				errorf("postback %s: tracker-string field %s = %q, want %q", p.key, f, q.Get(f), want)
			}
		}
	}
	return wrong
}

func decimalEqual(a, b string) bool {
	x, err1 := decimal.NewFromString(a)
	y, err2 := decimal.NewFromString(b)
	return err1 == nil && err2 == nil && x.Equal(y)
}
