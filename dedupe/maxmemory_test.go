package dedupe

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/internal/testinfra"
)

// TestMarkRefusedKeepsTheLease: at maxmemory with noeviction (the policy
// postbackd requires) Redis refuses every command that may grow memory and
// still runs DEL. A mark Redis refuses must leave the lease where it was,
// or a claim could take the postback and send it again while the mark is
// being retried; once Redis takes writes again the mark lands and drops the
// lease. A private Redis, because the test makes it refuse writes.
func TestMarkRefusedKeepsTheLease(t *testing.T) {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: testinfra.PrivateRedis(t, "--maxmemory-policy", "noeviction")})
	t.Cleanup(func() { _ = client.Close() })
	s := New(client, Options{Prefix: "oom"})
	if c, err := s.Classify(ctx, Deposit{ClickID: "c", EventID: "d1", Amount: "1", Currency: "EUR", OccurredAt: t0}); err != nil || c.Goal != "ftd" {
		t.Fatalf("classify: %+v, %v", c, err)
	}
	marks := []MarkRequest{
		{ClickID: "c", PostbackID: "pb-rd", Delivery: Delivery{HTTPStatus: 200, Attempts: 1, DeliveredAt: t0}},
		{ClickID: "c", PostbackID: "pb-ftd", Delivery: Delivery{HTTPStatus: 201, Attempts: 1, DeliveredAt: t0}, FTD: &FTDDelivered{EventID: "d1"}},
	}
	tokens := map[string]string{}
	for _, m := range marks {
		r, err := s.Claim(ctx, m.ClickID, m.PostbackID, time.Minute)
		if err != nil || r.State != ClaimAcquired {
			t.Fatalf("claim %s: %+v, %v", m.PostbackID, r, err)
		}
		tokens[m.PostbackID] = r.Token
	}
	leasesHeld := func(when string) {
		t.Helper()
		for _, m := range marks {
			if got := client.Get(ctx, s.clickKey(m.ClickID, "lease", m.PostbackID)).Val(); got != tokens[m.PostbackID] {
				t.Fatalf("%s: lease of %s is %q, want the holder's token", when, m.PostbackID, got)
			}
		}
	}

	// Any limit below what the server holds: from now on it is out of memory.
	if err := client.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := client.Set(ctx, "probe", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("SET at maxmemory: %v, want an OOM refusal", err)
	}
	for _, m := range marks {
		if _, err := s.MarkDelivered(ctx, m.ClickID, m.PostbackID, m.Delivery, m.FTD); err == nil || !strings.Contains(err.Error(), "OOM") {
			t.Fatalf("mark %s at maxmemory: %v, want the OOM refusal", m.PostbackID, err)
		}
	}
	if _, err := s.MarkDeliveredBatch(ctx, marks); err == nil || !strings.Contains(err.Error(), "OOM") || !strings.Contains(err.Error(), "mark 0 (postback pb-rd)") {
		t.Fatalf("mark batch at maxmemory: %v, want the OOM refusal of mark 0 (postback pb-rd)", err)
	}
	leasesHeld("after refused marks")
	for _, m := range marks {
		if r, err := s.Claim(ctx, m.ClickID, m.PostbackID, time.Minute); err == nil && r.State == ClaimAcquired {
			t.Fatalf("claim of %s acquired while its holder's mark is refused", m.PostbackID)
		}
	}
	leasesHeld("after refused claims")

	// Writes taken again: the retried marks land and drop the leases.
	if err := client.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkDeliveredBatch(ctx, marks); err != nil {
		t.Fatalf("mark batch: %v", err)
	}
	for _, m := range marks {
		if n := client.Exists(ctx, s.clickKey(m.ClickID, "lease", m.PostbackID)).Val(); n != 0 {
			t.Fatalf("lease of %s kept after its mark", m.PostbackID)
		}
		r, err := s.Claim(ctx, m.ClickID, m.PostbackID, time.Minute)
		if err != nil || r.State != ClaimDelivered || r.Delivery.HTTPStatus != m.Delivery.HTTPStatus {
			t.Fatalf("claim of %s after its mark: %+v, %v; want delivered %d", m.PostbackID, r, err, m.Delivery.HTTPStatus)
		}
	}
}
