package dispatcher

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/metrics"
	"github.com/postbackd/postbackd/postback"
)

// testToken escapes differently in a query (a%2Bb%2Fc%3D), in a path
// (a+b%2Fc=) and raw, so every redaction form is exercised. It shares no
// character with "[REDACTED]".
const testToken = "a+b/c="

// fakeClock is a settable clock for the breaker, timestamps and Retry-After.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// serverPartner is a partner whose every goal goes to srv, with fast retries.
func serverPartner(srv *httptest.Server) config.Partner {
	u, _ := url.Parse(srv.URL)
	tmpl := srv.URL + "/pb?cid={click_id}&goal={goal_alias}&amount={amount}&currency={currency}&tx={transaction_id}&token={token}"
	goals := map[postback.Goal]config.GoalConfig{}
	for _, g := range postback.Goals {
		goals[g] = config.GoalConfig{URL: tmpl}
	}
	return config.Partner{
		Goals:        goals,
		Token:        config.SecretRef{Value: testToken},
		AllowedHosts: []string{u.Hostname()},
		Timeout:      2 * time.Second,
		Retry: config.RetryPolicy{
			QuickAttempts:   3,
			InitialInterval: time.Millisecond,
			MaxInterval:     5 * time.Millisecond,
		},
	}
}

type testEnv struct {
	d       *Dispatcher
	metrics *metrics.Metrics
	clock   *fakeClock
}

func newEnv(t testing.TB, partners map[string]config.Partner) testEnv {
	t.Helper()
	env := testEnv{metrics: metrics.New(nil), clock: newFakeClock()}
	d, err := New(partners, Options{Metrics: env.metrics, Now: env.clock.Now, Version: "test"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	env.d = d
	return env
}

func testPostback(partner string, goal postback.Goal) postback.Postback {
	return postback.Postback{
		ID:         postback.NewID(partner, goal, "ev-1", ""),
		Partner:    partner,
		Goal:       goal,
		Merchant:   "m1",
		ClickID:    "click-1",
		EventID:    "ev-1",
		PlayerID:   "pl-1",
		HasAmount:  true,
		Amount:     decimal.RequireFromString("10"),
		Currency:   "USD",
		CreatedAt:  time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC),
		OccurredAt: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC),
	}
}

// waitFor fails the test unless ch is closed or yields within d.
func waitFor[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
	var zero T
	return zero
}

// handlerFunc adapts a func for httptest with a request counter.
type counter struct {
	mu    sync.Mutex
	n     int
	times []time.Time
	uas   []string
}

func (c *counter) hit(r *http.Request) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	c.times = append(c.times, time.Now())
	c.uas = append(c.uas, r.UserAgent())
	return c.n
}

func (c *counter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
