package demo

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postbackd/postbackd/record"
)

// scriptedSummary is what the demo reads back after a scripted refusal: a
// registration delivered (and replayed after a redelivery), an FTD the
// tracker answered 200 "ERROR offer expired" which the partner's success
// rule (body ^OK) refused, re-audited once more after a redelivery, and an
// undecodable message. The tracker counted two 200s.
func scriptedSummary() *Summary {
	return &Summary{
		Players: 1,
		Events:  4,
		Audit: []record.Audit{
			{PostbackID: "pb-reg", EventID: "ev-1", Network: "datingnet", Goal: "reg", Outcome: record.OutcomeDelivered, HTTPStatus: 200, Attempts: 1},
			{PostbackID: "pb-reg", EventID: "ev-1", Network: "datingnet", Goal: "reg", Outcome: record.OutcomeDelivered, HTTPStatus: 200, Attempts: 1, Replayed: true},
			{PostbackID: "pb-ftd", EventID: "ev-2", Network: "datingnet", Goal: "ftd", Outcome: record.OutcomeDeadLettered, Reason: "postback_refused",
				HTTPStatus: 200, Attempts: 1, Error: `refused by partner: body "ERROR offer expired" does not match ^OK`},
			{PostbackID: "pb-ftd", EventID: "ev-2", Network: "datingnet", Goal: "ftd", Outcome: record.OutcomeDeadLettered, Reason: "postback_refused",
				HTTPStatus: 200, Attempts: 1},
			{EventID: "", Outcome: record.OutcomeDeadLettered, Reason: "undecodable"},
		},
		DeadLetters: []record.DeadLetter{{Reason: "postback_refused"}, {Reason: "undecodable"}},
		Received:    2,
		Elapsed:     time.Second,
	}
}

func TestHeadlineCountsOnlyAcceptedPostbacks(t *testing.T) {
	s := scriptedSummary()
	s.tally()
	if s.Accepted != 1 || s.Refused != 1 {
		t.Errorf("Accepted, Refused = %d, %d, want 1, 1", s.Accepted, s.Refused)
	}
	var out bytes.Buffer
	printSummary(&out, s)
	printed := out.String()
	if want := "postbacks: 1 accepted by the partner's success rule, 1 refused (dead-lettered as postback_refused)\n"; !strings.Contains(printed, want) {
		t.Errorf("headline lacks %q:\n%s", want, printed)
	}
	if strings.Contains(printed, "2 postbacks accepted") || strings.Contains(printed, "2 accepted") {
		t.Errorf("the headline counts the refused 200 as accepted:\n%s", printed)
	}
	for _, row := range []string{
		fmt.Sprintf("%-10s  %-11s  %-23s  %6d\n", "datingnet", "ftd", "dead_lettered (refused)", 2),
		fmt.Sprintf("%-10s  %-11s  %-23s  %6d\n", "datingnet", "reg", "delivered", 1),
		fmt.Sprintf("%-10s  %-11s  %-23s  %6d\n", "datingnet", "reg", "delivered (replay)", 1),
		fmt.Sprintf("%-10s  %-11s  %-23s  %6d\n", "-", "-", "dead_lettered", 1),
	} {
		if !strings.Contains(printed, row) {
			t.Errorf("table lacks the row %q:\n%s", row, printed)
		}
	}
}

func TestLegendPrintedWithTable(t *testing.T) {
	s := scriptedSummary()
	s.tally()
	var out bytes.Buffer
	printSummary(&out, s)
	printed := out.String()
	table := strings.Index(printed, "partner     goal")
	at := strings.Index(printed, legend)
	if table < 0 || at < table {
		t.Fatalf("no legend after the table:\n%s", printed)
	}
	if dlq := strings.Index(printed, "dead letters by reason:"); dlq < at {
		t.Errorf("the legend is not right below the table:\n%s", printed)
	}
	// The legend names each mark the table uses, and says what it denotes.
	for _, mark := range []string{
		"  -          the audit record names no partner (or no goal): the event made no\n             postback",
		"  (replay)   the postback was delivered before and its event came again",
		"not sent again",
		"  (refused)  the partner refused it for good",
	} {
		if !strings.Contains(legend, mark) {
			t.Errorf("legend lacks %q:\n%s", mark, legend)
		}
	}
}

func TestScriptSize(t *testing.T) {
	for _, players := range []int{1, 7, 30} {
		sc := newScript(players)
		events := 0
		for _, p := range sc.phases {
			events += len(p)
		}
		want := fmt.Sprintf("%d player journeys (casino-1 %d, dating-1 %d), %d events in 2 phases", 2*players, players, players, events)
		if got := sc.size(); got != want {
			t.Errorf("newScript(%d).size() = %q, want %q", players, got, want)
		}
		if sc.players() != 2*players {
			t.Errorf("newScript(%d).players() = %d, want %d", players, sc.players(), 2*players)
		}
	}
}

// fakeClock steps by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestProgressPlainWhenNotTerminal(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: time.Unix(0, 0)}
	p := newProgressPrinter(&out)
	if p.tty {
		t.Fatal("a bytes.Buffer is taken for a terminal")
	}
	p.now, p.last = clock.now, clock.t
	// 12 s of updates every 100 ms: a plain line at 5 s and 10 s only.
	for i := 1; i <= 120; i++ {
		clock.t = clock.t.Add(100 * time.Millisecond)
		p.update(fmt.Sprintf("step %d", i))
	}
	p.final("done")
	p.close()
	if strings.Contains(out.String(), "\r") {
		t.Errorf("progress to a non-terminal holds \\r: %q", out.String())
	}
	if want := "step 50\nstep 100\ndone\n"; out.String() != want {
		t.Errorf("progress = %q, want %q", out.String(), want)
	}
}

func TestProgressShortRunNotTerminal(t *testing.T) {
	var out bytes.Buffer
	p := newProgressPrinter(&out)
	for i := 0; i < 20; i++ {
		p.update("working")
	}
	p.final("done")
	if out.String() != "done\n" {
		t.Errorf("a short run printed %q, want only the final line", out.String())
	}
}

func TestProgressRedrawsOnTerminal(t *testing.T) {
	var out bytes.Buffer
	p := newProgressPrinter(&out)
	p.tty = true
	p.update("one")
	p.update("two")
	p.final("done")
	if want := "\rone   \rtwo   \rdone   \n"; out.String() != want {
		t.Errorf("terminal progress = %q, want %q", out.String(), want)
	}
	out.Reset()
	p.update("cut short")
	p.close()
	if want := "\rcut short   \n"; out.String() != want {
		t.Errorf("close after a frame = %q, want %q", out.String(), want)
	}
}

func TestIsTerminal(t *testing.T) {
	if isTerminal(&bytes.Buffer{}) {
		t.Error("a bytes.Buffer is a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("a regular file is a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) {
		t.Error("a pipe is a terminal")
	}
}
