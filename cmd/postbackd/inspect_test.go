package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/internal/testinfra"
)

// TestInspect: a click's state written through the store is printed, every
// part of it, and nothing of another click.
func TestInspect(t *testing.T) {
	rc, _, fake := testinfra.Redis(t)
	addr := os.Getenv("REDIS_ADDR")
	if fake != nil {
		addr = fake.Addr()
	}
	tc := writeConfig(t, []string{"127.0.0.1:1"}, addr, "http://127.0.0.1:1")
	store := dedupe.New(rc, dedupe.Options{Prefix: tc.prefix})
	ctx := context.Background()
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if _, err := store.Attribute(ctx, dedupe.Touch{ClickID: "c-7", EventID: "r1", MerchantID: "m1", Network: "net",
		Params: map[string]string{"sub1": "aff42"}, Registers: true, At: at}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []string{"d1", "d2"} {
		if _, err := store.Classify(ctx, dedupe.Deposit{ClickID: "c-7", EventID: ev, Amount: "25.50", Currency: "EUR", OccurredAt: at,
			Route: dedupe.Route{Partner: "net", Via: dedupe.RouteClick, Params: map[string]string{"sub1": "aff42"}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.Claim(ctx, "c-7", "pb-ftd", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := store.MarkDelivered(ctx, "c-7", "pb-ftd", dedupe.Delivery{HTTPStatus: 200, Attempts: 2, DeliveredAt: at, URL: "http://t/pb?token=[REDACTED]"},
		&dedupe.FTDDelivered{EventID: "d1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Claim(ctx, "c-7", "pb-rd", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := store.Schedule(ctx, "pb:x", at, []byte(`{"kind":"postback","click_id":"c-7","postback":{"id":"pb-rd","goal":"rdep","partner":"net","attempts":3}}`)); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"inspect", "--config", tc.path, "c-7"}, envOf(tc.env), &stdout, &stderr); code != 0 {
		t.Fatalf("inspect exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"merchant m1, network net, params sub1=aff42", "registered 2026-12-01T10:00:00Z",
		"deposit d1, 25.50 EUR", "delivered", "route net via click",
		"d1: ftd", "d2: rdep",
		"HTTP 200, 2 attempts", "token=[REDACTED]", "scheduled (1)", "postback pb-rd (rdep to net, 3 attempts so far)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	for id, state := range map[string]string{"pb-ftd": "delivered", "pb-rd": "claimed"} {
		if !lineWith(out, id, state) {
			t.Errorf("no line says %s is %s:\n%s", id, state, out)
		}
	}
	stdout.Reset()
	if code := run(ctx, []string{"inspect", "--config", tc.path, "other"}, envOf(tc.env), &stdout, &stderr); code != 0 ||
		!lineWith(stdout.String(), "FTD", "none") || strings.Contains(stdout.String(), "pb-ftd") {
		t.Errorf("inspect of another click (exit %d):\n%s", code, stdout.String())
	}
	if code := run(ctx, []string{"inspect", "--config", tc.path}, envOf(tc.env), &stdout, &stderr); code != 2 {
		t.Errorf("inspect without a click id: exit %d, want 2", code)
	}
}

// lineWith reports whether one line of out contains every one of parts.
func lineWith(out string, parts ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}
