package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/service"
	"github.com/postbackd/postbackd/internal/tracker"
	"github.com/postbackd/postbackd/metrics"
)

type options struct {
	deposits, clicks, partitions, naive, maxInFlight int
	timeout                                          time.Duration
	brokers, redisAddr, cpuProfile                   string
	verbose                                          bool
	latencyFor                                       time.Duration
	goroutineDump                                    string
}

const loadConfig = `
kafka: {brokers: [%[1]s], group_id: load-%[4]s}
redis: {addrs: [%[2]s], key_prefix: load%[4]s, pool_size: 256}
topics:
  deposits: load-%[4]s.deposits
  revenue: load-%[4]s.revenue
  registrations: load-%[4]s.registrations
  qualifications: load-%[4]s.qualifications
  dispatched: load-%[4]s.dispatched
  confirmed: load-%[4]s.confirmed
  dlq: load-%[4]s.dlq
consumer: {max_in_flight: %[5]d, commit_interval: 200ms}
admin: {disabled: true}
log: {level: warn}
partners:
  net:
    token: {env: LOAD_TOKEN}
    allowed_hosts: [127.0.0.1]
    goals:
      ftd:  {url: "http://%[3]s/track/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&conv_status={conv_status}&token={token}&transaction_id={transaction_id}"}
      rdep: {url: "http://%[3]s/track/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
merchants:
  # The load stream has deposits only, no registrations: waiting for one
  # (attribution_wait) would hold every click's first deposit a minute.
  m1: {default_partner: net, attribution_wait: 0s}
`

func measure(ctx context.Context, o options, w io.Writer) error {
	if o.timeout <= 0 {
		o.timeout = time.Duration(o.deposits/500+60) * time.Second
	}
	run := suffix()
	probe := newLatencyProbe()
	tr := tracker.New(tracker.Options{CountOnly: true, OnRequest: probe.observe})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: tr, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	trackerAddr := ln.Addr().String()

	cfg, err := parseConfig(fmt.Sprintf(loadConfig, o.brokers, o.redisAddr, trackerAddr, run, o.maxInFlight))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "load run %s: %d deposits over %d clicks on %d partitions; Kafka %s, Redis %s, tracker %s\n",
		run, o.deposits, o.clicks, o.partitions, o.brokers, o.redisAddr, trackerAddr)

	httpRate, err := measureHTTP(ctx, "http://"+trackerAddr+"/track/conv?click_id=x&amount=1.00", 3*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  http-1conn baseline: %.0f req/s\n", httpRate)

	if err := service.CreateTopics(ctx, cfg, o.partitions, 1); err != nil {
		return err
	}
	t0 := time.Now()
	if err := produceDeposits(ctx, o, cfg.Topics.Deposits); err != nil {
		return err
	}
	fmt.Fprintf(w, "  produced %d deposits in %s\n", o.deposits, time.Since(t0).Round(time.Millisecond))

	naiveRate, err := runNaive(ctx, o, cfg, "http://"+trackerAddr, run)
	if err != nil {
		return fmt.Errorf("naive baseline: %w", err)
	}
	fmt.Fprintf(w, "  naive baseline: %.0f postbacks/s over %d events\n", naiveRate, o.naive)

	rate, wall, lat, err := runPostbackd(ctx, o, cfg, tr, probe)
	if err != nil {
		return fmt.Errorf("postbackd: %w", err)
	}
	fmt.Fprintf(w, "  postbackd: %.0f postbacks/s steady (first to last postback), %d in %s wall clock including group join\n",
		rate, o.deposits, wall.Round(time.Millisecond))
	fmt.Fprintf(w, "\n%-34s %12s %10s %12s\n", "pipeline (same run, same machine)", "postbacks/s", "vs naive", "vs http-1conn")
	fmt.Fprintf(w, "%-34s %12.0f %9.2fx %11.2fx\n", "naive: one at a time, sync audit", naiveRate, 1.0, naiveRate/httpRate)
	fmt.Fprintf(w, "%-34s %12.0f %9.2fx %11.2fx\n", "postbackd", rate, rate/naiveRate, rate/httpRate)
	fmt.Fprintf(w, "%-34s %12.0f %9.2fx %11.2fx\n", "raw HTTP leg, 1 connection", httpRate, httpRate/naiveRate, 1.0)
	if lat.n > 0 {
		fmt.Fprintf(w, "\nlatency, publication to tracker, at %.0f deposits/s (%.0f%% of the measured throughput), %d deposits: p50 %s, p95 %s, p99 %s\n",
			lat.rate, 100*lat.rate/rate, lat.n, lat.p50.Round(100*time.Microsecond), lat.p95.Round(100*time.Microsecond), lat.p99.Round(100*time.Microsecond))
	}
	return nil
}

func suffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func parseConfig(yaml string) (*config.Config, error) {
	return config.Parse([]byte(yaml), ".", func(k string) string {
		if k == "LOAD_TOKEN" {
			return "load-secret"
		}
		return ""
	})
}

// measureHTTP is the raw HTTP leg: GETs over one kept-alive connection.
func measureHTTP(ctx context.Context, url string, d time.Duration) (float64, error) {
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	end := time.Now().Add(d)
	n := 0
	start := time.Now()
	for time.Now().Before(end) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func produceDeposits(ctx context.Context, o options, topic string) error {
	wr := &kafka.Writer{Addr: kafka.TCP(strings.Split(o.brokers, ",")...), Topic: topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchSize: 2000, BatchTimeout: 5 * time.Millisecond}
	defer wr.Close()
	base := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	batch := make([]kafka.Message, 0, 2000)
	for i := 0; i < o.deposits; i++ {
		click := fmt.Sprintf("click-%06d", i%o.clicks)
		v, _ := json.Marshal(map[string]any{
			"event_id": fmt.Sprintf("dep-%08d", i), "occurred_at": base.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339),
			"merchant_id": "m1", "click_id": click, "amount": fmt.Sprintf("%d.%02d", 10+i%90, i%100), "currency": "USD",
			"status": "succeeded", "player_id": "p" + click, "payment_method": "card",
		})
		batch = append(batch, kafka.Message{Key: []byte(click), Value: v})
		if len(batch) == cap(batch) || i == o.deposits-1 {
			if err := wr.WriteMessages(ctx, batch...); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

// runPostbackd runs the service in-process until the tracker has received
// one postback per deposit, then (with the service still running and the
// backlog gone) offers the latency probe half the measured rate.
func runPostbackd(ctx context.Context, o options, cfg *config.Config, tr *tracker.Tracker, probe *latencyProbe) (float64, time.Duration, latencyResult, error) {
	var lat latencyResult
	rate, wall, err := runThroughput(ctx, o, cfg, tr, func(ctx context.Context, rate float64) error {
		if o.latencyFor <= 0 {
			return nil
		}
		var err error
		lat, err = probe.run(ctx, cfg.Kafka.Brokers, cfg.Topics.Deposits, rate/2, o.latencyFor, o.timeout)
		return err
	})
	return rate, wall, lat, err
}

// runThroughput starts the service, waits until the tracker has one
// postback per deposit, and calls then (service still running) with the
// measured rate before stopping it.
func runThroughput(ctx context.Context, o options, cfg *config.Config, tr *tracker.Tracker, then func(context.Context, float64) error) (float64, time.Duration, error) {
	before := tr.Count()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return 0, 0, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, 0, err
		}
		defer pprof.StopCPUProfile()
	}
	m := metrics.New(nil)
	svc, err := service.New(cfg, zap.NewNop(), service.Options{Metrics: m})
	if err != nil {
		return 0, 0, err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- svc.Run(runCtx) }()
	defer func() { stop(); <-done }()

	var first time.Time
	firstCount := int64(0)
	lastReport := time.Now()
	deadline := time.Now().Add(o.timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		n := tr.Count() - before
		if first.IsZero() && n > 0 {
			first, firstCount = time.Now(), n
		}
		if n >= int64(o.deposits) {
			last := time.Now()
			rate := float64(n-firstCount) / last.Sub(first).Seconds()
			return rate, last.Sub(start), then(ctx, rate)
		}
		if o.goroutineDump != "" && n >= int64(o.deposits/2) {
			if f, err := os.Create(o.goroutineDump); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(f, 1)
				f.Close()
			}
			o.goroutineDump = ""
		}
		if o.verbose && time.Since(lastReport) >= time.Second {
			lastReport = time.Now()
			fmt.Fprintf(os.Stderr, "  … %d postbacks, in flight %.0f\n", n, gaugeValue(m))
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("timed out after %s with %d of %d postbacks", o.timeout, n, o.deposits)
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case err := <-done:
			return 0, 0, fmt.Errorf("service stopped: %w", err)
		case <-tick.C:
		}
	}
}

// naiveClassify is the baseline's FTD/RD script: the same decision in one
// EVALSHA, without batching.
var naiveClassify = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 'ftd' end
return 'rdep'`)

// runNaive is the baseline pipeline: fetch one message, classify it, send
// its postback, write its audit record synchronously, commit it; repeat.
func runNaive(ctx context.Context, o options, cfg *config.Config, trackerURL, run string) (float64, error) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.Kafka.Brokers, GroupID: "naive-" + run, Topic: cfg.Topics.Deposits,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond, StartOffset: kafka.FirstOffset})
	defer r.Close()
	rc := redis.NewClient(&redis.Options{Addr: o.redisAddr})
	defer rc.Close()
	wr := &kafka.Writer{Addr: kafka.TCP(cfg.Kafka.Brokers...), Topic: cfg.Topics.Dispatched, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond}
	defer wr.Close()
	hc := &http.Client{Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	var start time.Time
	for i := 0; i < o.naive; i++ {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return 0, err
		}
		if i == 0 {
			start = time.Now()
		}
		var ev struct {
			EventID string `json:"event_id"`
			ClickID string `json:"click_id"`
			Amount  string `json:"amount"`
		}
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			return 0, err
		}
		goal, err := naiveClassify.Run(ctx, rc, []string{"naive" + run + ":" + ev.ClickID}, ev.EventID).Text()
		if err != nil {
			return 0, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, trackerURL+"/naive?click_id="+ev.ClickID+"&goal="+goal+"&amount="+ev.Amount, nil)
		res, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		audit, _ := json.Marshal(map[string]any{"event_id": ev.EventID, "goal": goal, "http_status": res.StatusCode})
		if err := wr.WriteMessages(ctx, kafka.Message{Key: m.Key, Value: audit}); err != nil {
			return 0, err
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			return 0, err
		}
	}
	return float64(o.naive-1) / time.Since(start).Seconds(), nil
}

func gaugeValue(m *metrics.Metrics) float64 {
	var d dto.Metric
	if err := m.InFlight.Write(&d); err != nil {
		return -1
	}
	return d.GetGauge().GetValue()
}
