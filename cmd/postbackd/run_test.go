package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/internal/testinfra"
	"github.com/postbackd/postbackd/internal/tracker"
)

// These tests run the real program through run, as main does, with a
// getenv of their own and buffers for stdout and stderr.

// syncBuffer is a bytes.Buffer safe to read while run writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
		notStderr  []string
		env        map[string]string
	}{
		{name: "no arguments", args: nil, wantCode: 2, wantStderr: []string{"usage: postbackd", "run --config FILE", "topics check"}},
		{name: "version", args: []string{"version"}, wantCode: 0, wantStdout: []string{"postbackd " + version}},
		{name: "--version", args: []string{"--version"}, wantCode: 0, wantStdout: []string{"postbackd " + version}},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: []string{"usage: postbackd"}},
		{name: "unknown command", args: []string{"serve"}, wantCode: 2, wantStderr: []string{`unknown command "serve"`, "usage: postbackd"}},
		{name: "run without --config", args: []string{"run"}, wantCode: 2, wantStderr: []string{"--config is required"}},
		{name: "run with an unknown flag", args: []string{"run", "--nope"}, wantCode: 2, wantStderr: []string{"flag provided but not defined: -nope"}},
		{name: "run with a missing file", args: []string{"run", "--config", filepath.Join(t.TempDir(), "absent.yaml")}, wantCode: 2, wantStderr: []string{"invalid configuration", "absent.yaml"}},
		{name: "topics without a subcommand", args: []string{"topics"}, wantCode: 2, wantStderr: []string{"usage: postbackd"}},
		{name: "topics with an unknown subcommand", args: []string{"topics", "delete", "--config", "x.yaml"}, wantCode: 2, wantStderr: []string{"usage: postbackd"}},
		{name: "topics check without --config", args: []string{"topics", "check"}, wantCode: 2, wantStderr: []string{"--config is required"}},
		{name: "run --help", args: []string{"run", "--help"}, wantCode: 0, wantStderr: []string{"-config"}},
		{name: "topics check --help", args: []string{"topics", "check", "--help"}, wantCode: 0, wantStderr: []string{"-partitions"}},
		{name: "tracker --help", args: []string{"tracker", "--help"}, wantCode: 0, wantStderr: []string{"-addr"}},
		{name: "rebuild-state --help", args: []string{"rebuild-state", "--help"}, wantCode: 0, wantStderr: []string{"usage: postbackd rebuild-state", "-rewind-to", "-dry-run"}},
		{name: "check-config of an example", args: []string{"check-config", "--config", "../../examples/tracker-string.yaml"}, wantCode: 0,
			wantStdout: []string{"configuration valid", "datingnet"}},
		{name: "check-config with an unusable proxy", args: []string{"check-config", "--config", "../../examples/tracker-string.yaml"},
			env: map[string]string{"HTTPS_PROXY": "https://ops:hunter2@proxy.internal:443"}, wantCode: 2,
			wantStderr: []string{"invalid environment", "environment variable HTTPS_PROXY", `the scheme "https"`}, notStderr: []string{"hunter2", "proxy.internal"}},
		{name: "check-config with a proxy", args: []string{"check-config", "--config", "../../examples/tracker-string.yaml"},
			env: map[string]string{"https_proxy": "http://ops:hunter2@proxy.internal:3128", "HTTPS_PROXY": "https://unusable"}, wantCode: 0,
			wantStdout: []string{"configuration valid"}},
		{name: "check-config with the lower-case proxy unusable", args: []string{"check-config", "--config", "../../examples/tracker-string.yaml"},
			env: map[string]string{"https_proxy": "http://ops:hunter2@proxy internal:3128", "HTTPS_PROXY": "http://proxy.internal:3128"}, wantCode: 2,
			wantStderr: []string{"environment variable https_proxy: "}, notStderr: []string{"hunter2", "proxy internal"}},
		{name: "check-config with an unusable proxy no postback goes through", args: []string{"check-config", "--config", "../../examples/tracker-string.yaml"},
			env: map[string]string{"HTTP_PROXY": "https://ops:hunter2@proxy.internal:443"}, wantCode: 0, wantStdout: []string{"configuration valid"}},
		{name: "check-config of a broken file", args: []string{"check-config", "--config", "../../config/testdata/many-mistakes.yaml"}, wantCode: 2,
			wantStderr: []string{"invalid configuration"}},
		{name: "render a deposit", args: []string{"render", "--config", "../../examples/tracker-string.yaml", "--event", "testdata/deposit.json"}, wantCode: 0,
			wantStdout: []string{"route: event (it names network datingnet)", "goal            ftd", "event=signup", "event=rebill", "key=[REDACTED]", "amount          29.90 EUR"}},
		{name: "render a qualification by the click's network", args: []string{"render", "--config", "../../examples/tracker-string.yaml", "--event", "testdata/qualification.json",
			"--click-network", "datingnet", "--ftd", "dep-1:29.90:EUR"}, wantCode: 0, wantStdout: []string{"route: click", "goal            ftd_status", "not sent        goal_not_configured"}},
		{name: "render an invalid event", args: []string{"render", "--config", "../../examples/tracker-string.yaml", "--event", "testdata/invalid.json"}, wantCode: 1,
			wantStderr: []string{"would be dead-lettered", "as a deposit"}},
		{name: "render without --event", args: []string{"render", "--config", "../../examples/tracker-string.yaml"}, wantCode: 2, wantStderr: []string{"--event is required"}},
		{name: "replay --help", args: []string{"replay", "--help"}, wantCode: 0, wantStderr: []string{"usage: postbackd replay", "-reason", "-dry-run"}},
		{name: "inspect --help", args: []string{"inspect", "--help"}, wantCode: 0, wantStderr: []string{"usage: postbackd inspect"}},
		{name: "send-test --help", args: []string{"send-test", "--help"}, wantCode: 0, wantStderr: []string{"usage: postbackd send-test", "-partner"}},
		{name: "render --help", args: []string{"render", "--help"}, wantCode: 0, wantStderr: []string{"usage: postbackd render", "-event"}},
		{name: "check-config --help", args: []string{"check-config", "--help"}, wantCode: 0, wantStderr: []string{"usage: postbackd check-config"}},
		{name: "replay with a bad time", args: []string{"replay", "--config", "../../examples/tracker-string.yaml", "--since", "last week"}, wantCode: 2, wantStderr: []string{"--since"}},
		{name: "tracker on a bad address", args: []string{"tracker", "--addr", "127.0.0.1:-1"}, wantCode: 1, wantStderr: []string{"invalid port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, envOf(tt.env), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			for _, s := range tt.wantStdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			for _, s := range tt.wantStderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
				}
			}
			for _, s := range tt.notStderr {
				if strings.Contains(stderr.String(), s) {
					t.Errorf("stderr shows %q:\n%s", s, stderr.String())
				}
			}
			if tt.wantStdout == nil && stdout.Len() > 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
		})
	}
}

// TestRunReportsEveryConfigProblem breaks several keys of the shipped
// example and expects one run to name all of them, each with its key path,
// before anything connects.
func TestRunReportsEveryConfigProblem(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "examples", "local.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	breaks := []struct{ old, new, keyPath string }{
		{"start_offset: earliest", "start_offset: middle", "consumer.start_offset"},
		{"level: debug", "level: loud", "log.level"},
		{"key_prefix: pb-local", `key_prefix: "pb{x}"`, "redis.key_prefix"},
		{"default_partner: local", "default_partner: nobody", "merchants.casino-1.default_partner"},
		{"txid={transaction_id}\"\n      trial:", "txid={transaction_id}&x={nope}\"\n      trial:", "partners.local.goals.reg.url"},
		{"timeout: 2s", "timeout: -1s", "partners.local.timeout"},
		{`addr: "127.0.0.1:9090"`, `addr: "127.0.0.1:99999"`, "admin.addr"},
		{"pool_size: 64", "pool_size: 64\n  record_ttl: 30m", "redis.record_ttl"},
		{"    deal: hybrid", "    deal: hybrid\n    attribution_wait: -1s", "merchants.casino-1.attribution_wait"},
	}
	for _, b := range breaks {
		if n := strings.Count(cfg, b.old); n != 1 {
			t.Fatalf("examples/local.yaml holds %q %d times, want once: update this test", b.old, n)
		}
		cfg = strings.Replace(cfg, b.old, b.new, 1)
	}
	path := filepath.Join(t.TempDir(), "local.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	// No broker and no Redis listen on the example's ports: exit 2 (not 1)
	// shows validation stopped the run before anything connected.
	code := run(context.Background(), []string{"run", "--config", path}, envOf(nil), &stdout, &stderr)
	if code != 2 {
		t.Fatalf("exit code = %d, want 2\nstderr:\n%s", code, stderr.String())
	}
	out := stderr.String()
	if !strings.Contains(out, fmt.Sprintf("%d problems", len(breaks))) {
		t.Errorf("stderr does not count %d problems:\n%s", len(breaks), out)
	}
	for _, b := range breaks {
		if !strings.Contains(out, "\n  "+b.keyPath+": ") {
			t.Errorf("stderr does not report %s on a line of its own:\n%s", b.keyPath, out)
		}
	}
	// The record_ttl problem names every horizon it is measured against.
	for _, horizon := range []string{"partners.local.retry.max_age (5m0s)", "qualification.window (24h0m0s)"} {
		if !strings.Contains(out, horizon) {
			t.Errorf("the record_ttl problem does not name %s:\n%s", horizon, out)
		}
	}
	if !strings.Contains(out, "nope") {
		t.Errorf("stderr does not name the unknown macro:\n%s", out)
	}
}

// testConfig is a configuration file written for one test, with the
// environment it is loaded with.
type testConfig struct {
	path   string
	env    map[string]string
	topics []string
	prefix string
}

// writeConfig writes a configuration whose topics, group and key prefix are
// unique to the test. Brokers and Redis come through the environment
// overrides, as in a container; the partner token comes from getenv too.
func writeConfig(t *testing.T, brokers []string, redisAddr, trackerURL string) testConfig {
	t.Helper()
	u := testinfra.Unique()
	prefix := "cmd-" + u
	yaml := fmt.Sprintf(`
kafka:
  brokers: ["127.0.0.1:1"] # replaced by POSTBACKD_KAFKA_BROKERS
  group_id: %[1]s
redis:
  addrs: ["127.0.0.1:1"] # replaced by POSTBACKD_REDIS_ADDRS
  key_prefix: %[1]s
topics:
  deposits: %[1]s.deposits
  revenue: %[1]s.revenue
  registrations: %[1]s.registrations
  qualifications: %[1]s.qualifications
  dispatched: %[1]s.dispatched
  confirmed: %[1]s.confirmed
  dlq: %[1]s.dlq
consumer:
  commit_interval: 50ms
  drain_timeout: 5s
  session_timeout: 6s
admin:
  addr: "127.0.0.1:0"
log:
  level: debug
  format: json
partners:
  net:
    token: {env: CMD_TEST_TOKEN}
    allowed_hosts: [127.0.0.1]
    timeout: 2s
    goals:
      reg: {url: "%[2]s/pb?goal={goal}&click_id={click_id}&token={token}"}
      ftd: {url: "%[2]s/pb?goal={goal}&click_id={click_id}&amount={amount}&currency={currency}&token={token}"}
merchants:
  m1: {default_partner: net}
`, prefix, trackerURL)
	path := filepath.Join(t.TempDir(), "postbackd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, s := range []string{"deposits", "revenue", "registrations", "qualifications", "dispatched", "confirmed", "dlq"} {
		topics = append(topics, prefix+"."+s)
	}
	return testConfig{
		path: path,
		env: map[string]string{
			"POSTBACKD_KAFKA_BROKERS": strings.Join(brokers, ","),
			"POSTBACKD_REDIS_ADDRS":   redisAddr,
			"CMD_TEST_TOKEN":          "tok-" + u + "-do-not-log",
		},
		topics: topics,
		prefix: prefix,
	}
}

// redisAddr starts (or reaches) the test's Redis and returns its address.
func redisAddr(t *testing.T) string {
	t.Helper()
	_, _, m := testinfra.Redis(t)
	if m != nil {
		return m.Addr()
	}
	return os.Getenv("REDIS_ADDR")
}

func TestTopicsCheckAndCreate(t *testing.T) {
	brokers := testinfra.Kafka(t)
	c := writeConfig(t, brokers, "127.0.0.1:1", "http://127.0.0.1:1")
	// One topic exists: check names the others and not it.
	testinfra.CreateTopics(t, brokers, 1, c.topics[0])

	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"topics", "check", "--config", c.path}, envOf(c.env), &stdout, &stderr)
	if code != 1 {
		t.Fatalf("topics check with missing topics: exit %d, want 1\nstderr:\n%s", code, stderr.String())
	}
	for _, tp := range c.topics[1:] {
		if !strings.Contains(stderr.String(), tp) {
			t.Errorf("topics check does not name missing topic %s:\n%s", tp, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), c.topics[0]+",") || strings.Contains(stderr.String(), c.topics[0]+" ") {
		t.Errorf("topics check names existing topic %s:\n%s", c.topics[0], stderr.String())
	}
	if strings.Contains(stdout.String(), "all topics exist") {
		t.Errorf("topics check printed success with missing topics: %q", stdout.String())
	}

	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), []string{"topics", "create", "--config", c.path, "--partitions", "2"}, envOf(c.env), &stdout, &stderr)
	if code != 0 || !strings.Contains(stdout.String(), "all topics exist") {
		t.Fatalf("topics create: exit %d, stdout %q, stderr:\n%s", code, stdout.String(), stderr.String())
	}

	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), []string{"topics", "check", "--config", c.path}, envOf(c.env), &stdout, &stderr)
	if code != 0 || strings.TrimSpace(stdout.String()) != "all topics exist" {
		t.Fatalf("topics check after create: exit %d, stdout %q, stderr:\n%s", code, stdout.String(), stderr.String())
	}
}

// logLine is the part of a zap JSON line the tests read.
type logLine struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	Addr  string `json:"addr"`
	URL   string `json:"url"`
}

// logLines parses stderr as JSON lines; a line that is not JSON fails the test.
func logLines(t *testing.T, out string) []logLine {
	t.Helper()
	var lines []logLine
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Errorf("log line is not JSON: %q: %v", sc.Text(), err)
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testinfra.WaitUntil(t, d, what, cond)
}

// TestRunEndToEnd runs `postbackd run` against Kafka, Redis and a recording
// tracker: a registration and a deposit become two postbacks, a cancel
// stops it cleanly, and the token never reaches the logs.
func TestRunEndToEnd(t *testing.T) {
	brokers := testinfra.Kafka(t)
	// The first ftd attempt is refused with 503, so the postback is retried
	// in place and its URL and error reach a (debug) log line: the token
	// check below then covers a line that carries the URL.
	var refusedOnce sync.Once
	tr := tracker.New(tracker.Options{Respond: func(r *http.Request) (int, string) {
		status := http.StatusOK
		if r.URL.Query().Get("goal") == "ftd" {
			refusedOnce.Do(func() { status = http.StatusServiceUnavailable })
		}
		return status, http.StatusText(status)
	}})
	srv := httptest.NewServer(tr)
	defer srv.Close()
	c := writeConfig(t, brokers, redisAddr(t), srv.URL)
	token := c.env["CMD_TEST_TOKEN"]
	env := envOf(c.env)

	var out bytes.Buffer
	if code := run(context.Background(), []string{"topics", "create", "--config", c.path, "--partitions", "2"}, env, &out, &out); code != 0 {
		t.Fatalf("topics create: exit %d: %s", code, out.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"run", "--config", c.path}, env, &stdout, &stderr) }()
	exited := false
	defer func() {
		if !exited {
			cancel()
			<-done
		}
	}()

	// Readiness through the admin server: joined the group, Kafka and Redis reachable.
	var adminAddr string
	waitFor(t, 30*time.Second, "the admin server's address in the log", func() bool {
		select {
		case code := <-done:
			exited = true
			t.Fatalf("run exited early with %d:\n%s", code, stderr.String())
		default:
		}
		for _, l := range logLines(t, stderr.String()) {
			if l.Msg == "admin server listening" && l.Addr != "" {
				adminAddr = l.Addr
				return true
			}
		}
		return false
	})
	waitFor(t, 30*time.Second, "/readyz to answer 200", func() bool {
		res, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})

	at := time.Now().UTC().Format(time.RFC3339)
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	err := w.WriteMessages(pctx,
		kafka.Message{Topic: c.prefix + ".registrations", Key: []byte("click-1"), Value: []byte(
			`{"event_id":"reg-1","occurred_at":"` + at + `","merchant_id":"m1","click_id":"click-1","kind":"registration","player_id":"p1"}`)},
		kafka.Message{Topic: c.prefix + ".deposits", Key: []byte("click-1"), Value: []byte(
			`{"event_id":"dep-1","occurred_at":"` + at + `","merchant_id":"m1","click_id":"click-1","amount":"12.50","currency":"EUR","status":"succeeded","player_id":"p1"}`)},
	)
	if err != nil {
		t.Fatalf("produce: %v", err)
	}

	got := tr.WaitFor(30*time.Second, func(rs []tracker.Request) bool { return len(rs) >= 2 })
	if !got {
		t.Fatalf("tracker received %d postbacks, want 2; log:\n%s", tr.Count(), stderr.String())
	}
	goals := map[string]tracker.Request{}
	for _, r := range tr.Requests() {
		goals[r.Query.Get("goal")] = r
	}
	for _, g := range []string{"reg", "ftd"} {
		r, ok := goals[g]
		if !ok {
			t.Errorf("no %s postback; got %+v", g, tr.Requests())
			continue
		}
		if r.Path != "/pb" || r.Query.Get("click_id") != "click-1" || r.Query.Get("token") != token {
			t.Errorf("%s postback = %s?%s, want /pb for click-1 with the configured token", g, r.Path, r.Query.Encode())
		}
	}
	if r := goals["ftd"]; r.Query.Get("amount") != "12.50" || r.Query.Get("currency") != "EUR" {
		t.Errorf("ftd postback amount %q %q, want 12.50 EUR", r.Query.Get("amount"), r.Query.Get("currency"))
	}

	cancel()
	select {
	case code := <-done:
		exited = true
		if code != 0 {
			t.Errorf("run after cancel: exit %d, want 0", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30s of cancel")
	}

	log := stderr.String()
	if strings.Contains(log, token) {
		t.Error("the partner token appears in the log output")
	}
	if n := tr.Count(); n != 2 {
		t.Errorf("tracker received %d postbacks, want exactly 2", n)
	}
	var stopped, running, retried bool
	for _, l := range logLines(t, log) {
		stopped = stopped || l.Msg == "stopped"
		running = running || l.Msg == "postbackd running"
		if l.Msg == "postback retry in place" {
			retried = true
			if !strings.HasSuffix(l.URL, "&token=[REDACTED]") {
				t.Errorf("retry log line's url %q does not show the token redacted", l.URL)
			}
		}
		if l.Level == "error" {
			t.Errorf("error logged: %+v", l)
		}
	}
	if !retried {
		t.Errorf("log lacks the \"postback retry in place\" line of the refused attempt:\n%s", log)
	}
	if !running || !stopped {
		t.Errorf("log lacks \"postbackd running\" (%v) or \"stopped\" (%v):\n%s", running, stopped, log)
	}
	if stdout.String() != "" {
		t.Errorf("run wrote to stdout: %q", stdout.String())
	}
}
