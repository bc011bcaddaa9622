package pipeline_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/service"
	"github.com/postbackd/postbackd/record"
)

// TestReplayRefusedFTD: an FTD the partner refused for good is
// dead-lettered, and so is the qualification that came for it. Once the
// partner takes it again, `postbackd replay` of the DLQ gets the FTD sent,
// then its status change, each once; a second replay sends nothing.
func TestReplayRefusedFTD(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	const click = "replay-ftd"
	h.onClick(click, func(*http.Request) (int, string) { return http.StatusBadRequest, "unknown offer" })
	h.send(t, h.topics.Deposits, click, deposit("casino", "50.00", "EUR", "succeeded"))
	waitUntil(t, "the FTD dead-lettered", func() bool {
		return len(h.col.deadLetters(func(d record.DeadLetter) bool { return d.ClickID == click && d.Reason == "postback_refused" })) == 1
	})
	h.send(t, h.topics.Qualifications, click, qualification("casino", "approved"))
	waitUntil(t, "the qualification dead-lettered", func() bool {
		return len(h.col.deadLetters(func(d record.DeadLetter) bool { return d.ClickID == click && d.Reason == "ftd_dead_lettered" })) == 1
	})
	h.onClick(click, nil) // the partner takes it now

	cfg, err := config.Load(h.cfgPath, getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := service.Replay(ctx, cfg, h.log, service.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Replayed() != 2 {
		t.Fatalf("replayed %d, want the FTD and the qualification: %+v", rep.Replayed(), rep.Items)
	}
	got := h.waitAccepted(t, click, 2)
	if got[0].Query.Get("goal_alias") != "ftd" || got[0].Path != "/alpha/conv" || got[1].Path != "/alpha/conv-change" || got[1].Query.Get("conv_status") != "1" {
		t.Errorf("after the replay the tracker accepted %s, want the FTD then its approval", describe(got))
	}
	h.waitAudits(t, "the status change delivered", 1, func(a record.Audit) bool {
		return a.ClickID == click && a.Goal == "ftd_status" && a.Outcome == record.OutcomeDelivered
	})

	rep, err = service.Replay(ctx, cfg, h.log, service.ReplayOptions{})
	if err != nil || rep.Replayed() != 0 {
		t.Fatalf("second replay: %d replayed, %v; want none", rep.Replayed(), err)
	}
	h.barrier(t, "casino", click)
	if got := h.accepted(click); len(got) != 2 {
		t.Errorf("after a second replay the tracker accepted %s, want the same two", describe(got))
	}
}
