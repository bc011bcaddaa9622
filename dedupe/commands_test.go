package dedupe

import (
	"context"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/internal/testinfra"
)

// TestDepositCommands counts the Redis commands a deposit runs
// (attribution, classify-and-claim, delivered mark) and the script calls
// among them (EVALSHA), on a Redis of its own so that no other test's
// commands are counted. Redis's CPU per deposit follows these counts (each
// command called from Lua costs its own time plus 1-2 µs, each script call
// about 3 µs besides), so a change that adds one is a cost to see here, in
// the README's Performance section, before it reaches the hot path.
func TestDepositCommands(t *testing.T) {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: testinfra.PrivateRedis(t)})
	t.Cleanup(func() { _ = client.Close() })
	s := New(client, Options{Prefix: "cmd"})
	delivery := Delivery{HTTPStatus: 200, Attempts: 1, DeliveredAt: t0, URL: "https://t.example/conv"}

	// deposit runs one deposit's path as the pipeline does and returns the
	// commands Redis ran meanwhile, by name: those the scripts called, those
	// sent as they are, and the EVALSHA calls of the scripts.
	deposit := func(t *testing.T, click, event, network string) (goal string, commands map[string]int) {
		t.Helper()
		if err := client.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		a := attr(t, s, Touch{ClickID: click, EventID: event, MerchantID: "m", Network: network, DefaultPartner: "alpha", At: t0})
		if a.State != StateRouted {
			t.Fatalf("%s: %s, want routed", event, a.State)
		}
		token, err := NewClaimToken()
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.ClassifyClaimBatch(ctx, []ClassifyClaim{{
			Deposit:       Deposit{ClickID: click, EventID: event, Amount: "10.00", Currency: "EUR", OccurredAt: t0, Route: a.Route},
			FTDPostbackID: event + "-ftd", RDPostbackID: event + "-rd", Lease: time.Minute, Token: token,
		}})
		if err != nil || len(got) != 1 || got[0].Claim == nil || got[0].Claim.State != ClaimAcquired {
			t.Fatalf("%s: ClassifyClaimBatch: %+v, %v", event, got, err)
		}
		var ftd *FTDDelivered
		pb := event + "-rd"
		if got[0].Goal == "ftd" {
			ftd, pb = &FTDDelivered{EventID: event}, event+"-ftd"
		}
		if _, err := s.MarkDelivered(ctx, click, pb, delivery, ftd); err != nil {
			t.Fatal(err)
		}
		return string(got[0].Goal), commandStats(t, client)
	}

	// What a case's click has before its counted deposit.
	registered := func(t *testing.T, click string) {
		t.Helper()
		attr(t, s, Touch{ClickID: click, EventID: "reg-" + click, MerchantID: "m", Network: "beta", Registers: true, At: t0})
	}
	withFTD := func(t *testing.T, click string) {
		t.Helper()
		if goal, _ := deposit(t, click, "ftd-"+click, "beta"); goal != "ftd" {
			t.Fatalf("first deposit of %s classified %s", click, goal)
		}
	}

	// The scripts are loaded before the counted cases, so that none of them
	// counts a NOSCRIPT answer and the EVAL that loads the script.
	withFTD(t, "c0")

	for _, tc := range []struct {
		name, click, event, network string
		before                      func(*testing.T, string)
		goal                        string
		want                        map[string]int
	}{
		// A new click's first deposit, naming its network: the context is
		// written, the FTD record created and the answer remembered; the
		// mark's script reads the record back before flagging it delivered
		// and looks for a parked qualification.
		{"ftd", "c1", "d1", "beta", nil, "ftd", map[string]int{
			"evalsha": 3, "getex": 1, "set": 4, "get": 2, "hmget": 2, "hset": 2, "del": 1, "hget": 1}},
		// A repeat deposit naming the click's network: the context's TTL is
		// refreshed by the read itself and no route memo is read; the mark
		// is two plain commands (SET NX, then DEL), no script.
		{"rdep", "c2", "d2", "beta", withFTD, "rdep", map[string]int{
			"evalsha": 2, "getex": 1, "set": 3, "get": 2, "hmget": 1, "del": 1}},
		// A repeat deposit without a network is routed by the click, and its
		// route remembered under its event id.
		{"rdep by the click", "c3", "d3", "", withFTD, "rdep", map[string]int{
			"evalsha": 2, "getex": 1, "set": 4, "get": 3, "hmget": 1, "del": 1}},
		// The first deposit of a registered click, without a network: routed
		// by the click (its route remembered), then as the first case.
		{"ftd by the click", "c4", "d4", "", registered, "ftd", map[string]int{
			"evalsha": 3, "getex": 1, "set": 4, "get": 3, "hmget": 2, "hset": 2, "del": 1, "hget": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before(t, tc.click)
			}
			goal, got := deposit(t, tc.click, tc.event, tc.network)
			if goal != tc.goal {
				t.Fatalf("classified %s, want %s", goal, tc.goal)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("commands %v (%d), want %v (%d)", got, total(got), tc.want, total(tc.want))
			}
		})
	}
}

// commandStats returns the calls of each command since the last CONFIG
// RESETSTAT, leaving out the test's own commands (INFO, CONFIG) and the
// client's connection set-up.
func commandStats(t *testing.T, c *redis.Client) map[string]int {
	t.Helper()
	info, err := c.InfoMap(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for key, stats := range info["Commandstats"] {
		// cmdstat_get: calls=3,usec=4,usec_per_call=1.33,...
		name := strings.TrimPrefix(key, "cmdstat_")
		switch name {
		case "info", "config|resetstat", "config", "hello", "client|setinfo":
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(stats, "calls="), ",")
		n, err := strconv.Atoi(calls)
		if err != nil {
			t.Fatalf("commandstats %s: %q: %v", key, stats, err)
		}
		out[name] = n
	}
	return out
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
