package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postbackd/postbackd/internal/tracker"
)

// TestMain lets the test binary stand in for `postbackd run`: runGroup's
// tests start it as a member (LOADFAKE_TRACKER set, first argument "run").
func TestMain(m *testing.M) {
	if os.Getenv("LOADFAKE_TRACKER") != "" && len(os.Args) > 1 && os.Args[1] == "run" {
		os.Exit(fakeMember())
	}
	os.Exit(m.Run())
}

// fakeMember logs like postbackd (the admin address, a generation), serves
// /metrics counting one event and a quarter Redis round trip per postback,
// sends LOADFAKE_POSTBACKS GETs to the tracker, and exits 0 on SIGTERM.
func fakeMember() int {
	if os.Getenv("LOADFAKE_FAIL") != "" {
		fmt.Fprintln(os.Stderr, `{"level":"error","msg":"start: boom"}`)
		return 3
	}
	n, _ := strconv.Atoi(os.Getenv("LOADFAKE_POSTBACKS"))
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	var sent atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		s := sent.Load()
		fmt.Fprintf(w, "# TYPE postbackd_redis_duration_seconds histogram\n"+
			"postbackd_redis_duration_seconds_count{op=\"classify_batch\"} %d\n"+
			"postbackd_redis_duration_seconds_count{op=\"take_due\"} 3\n"+
			"postbackd_events_consumed_total{result=\"ok\",topic=\"t\"} %d\n"+
			"postbackd_in_flight_events 0\n", s/4, s)
	})
	go func() { _ = http.Serve(ln, mux) }()
	fmt.Fprintf(os.Stderr, `{"level":"info","msg":"admin server listening","addr":%q}`+"\n", ln.Addr().String())
	time.Sleep(200 * time.Millisecond) // the harness scrapes before the first event
	fmt.Fprintln(os.Stderr, `{"level":"info","msg":"generation joined","generation":1,"member":"fake"}`)
	go func() {
		c := &http.Client{Timeout: 5 * time.Second}
		for range n {
			res, err := c.Get(os.Getenv("LOADFAKE_TRACKER") + "/track/conv?click_id=x")
			if err != nil {
				return
			}
			res.Body.Close()
			sent.Add(1)
		}
	}()
	<-term
	return 0
}

func fakeGroup(t *testing.T, members, perMember int, expected int64, timeout time.Duration) (groupSpec, *tracker.Tracker) {
	tr := tracker.New(tracker.Options{CountOnly: true})
	srv := httptest.NewServer(tr)
	t.Cleanup(srv.Close)
	t.Setenv("LOADFAKE_TRACKER", srv.URL)
	t.Setenv("LOADFAKE_POSTBACKS", strconv.Itoa(perMember))
	dir := t.TempDir()
	cfg := filepath.Join(dir, "fake.yaml")
	if err := os.WriteFile(cfg, []byte("# the fake reads nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return groupSpec{name: "fake", bin: os.Args[0], dir: dir, cfgPath: cfg, members: members, expected: expected,
		timeout: timeout, tr: tr, stopWait: 10 * time.Second}, tr
}

func TestRunGroup(t *testing.T) {
	g, _ := fakeGroup(t, 2, 1000, 2000, 30*time.Second)
	thenRan := false
	var thenErr error
	g.then = func(_ context.Context, rate float64, m memberMeters) error {
		thenRan = rate > 0
		// The meters read the running members: both scraped, and CPU spent.
		ps, err := m.metrics()
		// A window starts on the members' readings so far.
		w := m.costs()
		switch {
		case err != nil:
			thenErr = err
		case len(ps) != 2:
			thenErr = fmt.Errorf("metrics of %d members, want 2", len(ps))
		case sumDelta(ps, make([]promTotals, 2)).events <= 0:
			thenErr = fmt.Errorf("no events in the members' metrics: %+v", ps)
		case w.cpu0 <= 0:
			thenErr = fmt.Errorf("members' CPU %v", w.cpu0)
		case !w.switches0OK || w.switches0 == 0:
			thenErr = fmt.Errorf("members' thread switches %d (read: %v)", w.switches0, w.switches0OK)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := runGroup(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if thenErr != nil {
		t.Error("then:", thenErr)
	}
	if r.postbacks != 2000 || r.rate <= 0 || !thenRan {
		t.Errorf("postbacks %d, rate %.0f, then ran %v", r.postbacks, r.rate, thenRan)
	}
	if r.prom.events <= 0 || r.prom.events > 2000 {
		t.Errorf("events counted %v", r.prom.events)
	}
	if rt := r.prom.redisTotal() / r.prom.events; rt < 0.2 || rt > 0.3 {
		t.Errorf("Redis round trips per event %.3f, want about 0.25 (%+v)", rt, r.prom)
	}
	if r.idleRSS <= 0 || r.peakRSS < r.idleRSS || r.cpuLife <= 0 {
		t.Errorf("idle RSS %d, peak RSS %d, CPU %v", r.idleRSS, r.peakRSS, r.cpuLife)
	}
	if r.stableAt <= 0 {
		t.Errorf("the group never settled: %+v", r)
	}
}

func TestRunGroupFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Run("timeout", func(t *testing.T) {
		g, _ := fakeGroup(t, 1, 10, 1000, time.Second)
		_, err := runGroup(ctx, g)
		if err == nil || !strings.Contains(err.Error(), "timed out after 1s with 10 of 1000 postbacks") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("member fails to start", func(t *testing.T) {
		g, _ := fakeGroup(t, 1, 10, 10, 10*time.Second)
		t.Setenv("LOADFAKE_FAIL", "1")
		_, err := runGroup(ctx, g)
		if err == nil || !strings.Contains(err.Error(), "exited before its admin server started") || !strings.Contains(err.Error(), "boom") {
			t.Errorf("err = %v", err)
		}
	})
}
