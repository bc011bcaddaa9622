package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/testinfra"
)

// binary is the postbackd binary TestMain built ("" when the infrastructure
// is absent and every test skips).
var binary string

// skipReason says why the tests cannot run here ("" when they can).
var skipReason string

// infraCommand is the README's command that starts the real servers and
// exports KAFKA_BROKERS and REDIS_ADDR.
const infraCommand = `eval "$(bash scripts/infra.sh up)"`

// noInfraReason is skipReason when KAFKA_BROKERS or REDIS_ADDR is unset.
const noInfraReason = "e2e tests need a real Kafka and Redis: set KAFKA_BROKERS and REDIS_ADDR (" + infraCommand + ")"

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if os.Getenv("KAFKA_BROKERS") == "" || os.Getenv("REDIS_ADDR") == "" {
		skipReason = noInfraReason
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "postbackd-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "postbackd")
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd := exec.Command("go", "build", "-o", binary, "./cmd/postbackd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/postbackd: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// moduleRoot is the folder holding go.mod, above this package.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the postbackd module")
	}
	return filepath.Dir(mod), nil
}

// TestSkipReasonNamesInfraCommand: a skipped run tells how to get the
// servers the way the README does, with the one command that starts them
// and exports their addresses.
func TestSkipReasonNamesInfraCommand(t *testing.T) {
	if !strings.Contains(noInfraReason, infraCommand) {
		t.Errorf("skip reason %q does not name %s", noInfraReason, infraCommand)
	}
	if strings.Contains(noInfraReason, "kafka.sh") || strings.Contains(noInfraReason, "redis.sh") {
		t.Errorf("skip reason %q still names the per-server scripts", noInfraReason)
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), infraCommand) {
		t.Errorf("README.md does not say %s, which the skip reason names", infraCommand)
	}
}

func requireInfra(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// tokenEnv names the variables the partner tokens come from; only the
// child processes get them.
const (
	scaleoTokenEnv = "E2E_SCALEO_TOKEN"
	datingTokenEnv = "E2E_DATING_TOKEN"
)

// testEnv is one test's isolated world: its own topics, consumer group,
// Redis key prefix, tracker and config file.
type testEnv struct {
	t       *testing.T
	id      string
	brokers []string
	redis   string
	topics  map[string]string // role → topic name
	group   string
	prefix  string
	tracker *scriptedTracker
	dir     string
	tokens  map[string]string

	// settings rendered into the config
	window         time.Duration
	drainTimeout   time.Duration
	partnerTimeout time.Duration
	maxInFlight    int
	partitions     int // of each topic createTopics creates
}

type envOptions struct {
	plan         map[string]string
	window       time.Duration // qualification.window
	createTopics bool
	// maxInFlight bounds consumer.max_in_flight (default 4096, more than a
	// whole stream): a small bound leaves work unfetched when a member
	// stops, so the next owner has something to take over.
	maxInFlight int
	// partitions of each created topic (default 4, the default of topics
	// create).
	partitions int
	// drainTimeout is consumer.drain_timeout (default 10s).
	drainTimeout time.Duration
	// partnerTimeout is both partners' timeout (default 3s).
	partnerTimeout time.Duration
}

func newEnv(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	requireInfra(t)
	id := randomID()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	e := &testEnv{
		t:       t,
		id:      name + "-" + id,
		brokers: strings.Split(os.Getenv("KAFKA_BROKERS"), ","),
		redis:   os.Getenv("REDIS_ADDR"),
		topics:  map[string]string{},
		group:   "e2e-" + name + "-" + id,
		prefix:  "e2e-" + id,
		dir:     t.TempDir(),
		tokens: map[string]string{
			scaleoTokenEnv: "scaleo-secret-" + randomID(),
			datingTokenEnv: "dating-secret-" + randomID(),
		},
		window:       o.window,
		drainTimeout: 10 * time.Second,
		maxInFlight:  o.maxInFlight,
		partitions:   o.partitions,
	}
	if e.partitions == 0 {
		e.partitions = 4
	}
	if o.drainTimeout > 0 {
		e.drainTimeout = o.drainTimeout
	}
	e.partnerTimeout = 3 * time.Second
	if o.partnerTimeout > 0 {
		e.partnerTimeout = o.partnerTimeout
	}
	if e.maxInFlight == 0 {
		e.maxInFlight = 4096
	}
	if e.window == 0 {
		e.window = 2 * time.Minute
	}
	for _, r := range allRoles {
		e.topics[r] = "e2e." + e.id + "." + r
	}
	if o.plan == nil {
		o.plan = map[string]string{}
	}
	e.tracker = startTracker(t, o.plan)
	e.writeConfig("config.yaml", e.topics)
	if o.createTopics {
		e.createTopics()
	}
	return e
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// configTemplate is the configuration every test runs with. Fast timings
// keep the tests short; delayed.lease is as short as validation allows: the
// partners' claim lease (3 × (3s + 1.5 × 50ms) + 2 × 5s ≈ 19.2s).
var configTemplate = template.Must(template.New("config").Parse(`
kafka:
  brokers: [{{range $i, $b := .Brokers}}{{if $i}}, {{end}}"{{$b}}"{{end}}]
  group_id: {{.Group}}
  client_id: postbackd-e2e
redis:
  addrs: ["{{.Redis}}"]
  key_prefix: {{.Prefix}}
topics:
  deposits: {{.Topics.deposits}}
  revenue: {{.Topics.revenue}}
  registrations: {{.Topics.registrations}}
  qualifications: {{.Topics.qualifications}}
  dispatched: {{.Topics.dispatched}}
  confirmed: {{.Topics.confirmed}}
  dlq: {{.Topics.dlq}}
consumer:
  max_in_flight: {{.MaxInFlight}}
  commit_interval: 100ms
  drain_timeout: {{.Drain}}
  session_timeout: 6s
  rebalance_timeout: 20s
delayed:
  poll_interval: 100ms
  lease: {{.Lease}}
qualification:
  window: {{.Window}}
admin:
  addr: "127.0.0.1:9090"
log:
  level: info
partners:
  scaleo:
    token: {env: ` + scaleoTokenEnv + `}
    allowed_hosts: [127.0.0.1]
    timeout: {{.PartnerTimeout}}
    retry: &retry {quick_attempts: 3, initial_interval: 10ms, max_interval: 50ms, delayed_initial: 300ms, delayed_max: 1s, max_age: 10m}
    # After a restart every postback of the delayed path comes due at once;
    # those the script fails five times would keep a default breaker (20
    # failures, 30 s) open longer than a test should wait.
    breaker: &breaker {failures: 20, cooldown: 1s}
    goals:
      reg:        {url: "http://{{.Tracker}}/track/conv?g={goal}&status={conv_status}&event_id={event_id}&click_id={click_id}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
      trial:      {url: "http://{{.Tracker}}/track/conv?g={goal}&status={conv_status}&event_id={event_id}&click_id={click_id}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
      ftd:        {url: "http://{{.Tracker}}/track/conv?g={goal}&status={conv_status}&event_id={event_id}&click_id={click_id}&amount={amount}&currency={currency}&token={token}&transaction_id={transaction_id}&custom2={param.custom2}"}
      ftd_status: {url: "http://{{.Tracker}}/track/conv-change?g={goal}&status={conv_status}&event_id={event_id}&click_id={click_id}&amount={amount}&currency={currency}&token={token}&transaction_id={transaction_id}"}
      rdep:       {url: "http://{{.Tracker}}/track/conv?g={goal}&status={conv_status}&event_id={event_id}&click_id={click_id}&amount={amount}&currency={currency}&token={token}&transaction_id={transaction_id}"}
      revshare:   {url: "http://{{.Tracker}}/track/conv?g={goal}&status={conv_status}&event_id={event_id}&click_id={click_id}&amount={amount}&currency={currency}&token={token}&transaction_id={transaction_id}"}
  datingnet:
    token: {env: ` + datingTokenEnv + `}
    allowed_hosts: [127.0.0.1]
    timeout: {{.PartnerTimeout}}
    retry: *retry
    breaker: *breaker
    success: {statuses: [200], body_pattern: "^OK"}
    tracker_string: {param: tr, pattern: "trID_{id}_{affid}-{transid}-{clickid}-{extra}_trID"}
    goals:
      reg:   {alias: free_reg, url: "http://{{.Tracker}}/postback?goal={goal_alias}&g={goal}&status={conv_status}&event_id={event_id}&click_id={click_id}&affid={tr.affid}&transid={tr.transid}&clickid={tr.clickid}&offer={offer_id}&tid={transaction_id}&key={token}"}
      trial: {alias: trial, url: "http://{{.Tracker}}/postback?goal={goal_alias}&g={goal}&status={conv_status}&event_id={event_id}&click_id={click_id}&affid={tr.affid}&transid={tr.transid}&clickid={tr.clickid}&offer={offer_id}&tid={transaction_id}&key={token}"}
      ftd:   {alias: signup, url: "http://{{.Tracker}}/postback?goal={goal_alias}&g={goal}&status={conv_status}&event_id={event_id}&click_id={click_id}&affid={tr.affid}&transid={tr.transid}&clickid={tr.clickid}&offer={offer_id}&amount={amount}&currency={currency}&tid={transaction_id}&key={token}"}
      rdep:  {alias: rebill, url: "http://{{.Tracker}}/postback?goal={goal_alias}&g={goal}&status={conv_status}&event_id={event_id}&click_id={click_id}&affid={tr.affid}&transid={tr.transid}&clickid={tr.clickid}&offer={offer_id}&amount={amount}&currency={currency}&tid={transaction_id}&key={token}"}
merchants:
  casino:     {default_partner: scaleo, deal: hybrid, revshare_percent: 35}
  sportsbook: {default_partner: scaleo, deal: cpa}
  dating:     {default_partner: datingnet, deal: cpa}
  # attribution_test.go: waiting off, with and without a default partner.
  instant:    {default_partner: scaleo, deal: cpa, attribution_wait: 0s}
  unrouted:   {deal: cpa, attribution_wait: 0s}
`))

// writeConfig renders the configuration with the given topics into the
// test's folder and returns its path.
func (e *testEnv) writeConfig(name string, topics map[string]string) string {
	e.t.Helper()
	var b bytes.Buffer
	err := configTemplate.Execute(&b, map[string]any{
		"Brokers": e.brokers, "Group": e.group, "Redis": e.redis, "Prefix": e.prefix, "Topics": topics,
		"Tracker": e.tracker.addr, "Window": e.window.String(), "Drain": e.drainTimeout.String(),
		"PartnerTimeout": e.partnerTimeout.String(), "Lease": e.delayedLease().String(),
		"MaxInFlight": e.maxInFlight,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func (e *testEnv) configPath() string { return filepath.Join(e.dir, "config.yaml") }

// childEnv is the environment of a postbackd process: this process's,
// without any POSTBACKD_* override (the config file is the whole truth),
// plus the partner tokens.
func (e *testEnv) childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POSTBACKD_") {
			env = append(env, kv)
		}
	}
	for k, v := range e.tokens {
		env = append(env, k+"="+v)
	}
	return append(env, extra...)
}

// runBinary runs a short postbackd command to completion.
func (e *testEnv) runBinary(timeout time.Duration, args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = e.childEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			e.t.Fatalf("postbackd %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return code, out.String(), errb.String()
}

// createTopics creates the test's topics with the binary itself (4
// partitions unless envOptions.partitions says otherwise), which also tests
// `topics create` and `topics check`.
func (e *testEnv) createTopics() {
	e.t.Helper()
	args := []string{"topics", "create", "--config", e.configPath()}
	if e.partitions != 4 {
		args = append(args, "--partitions", strconv.Itoa(e.partitions))
	}
	code, out, errOut := e.runBinary(60*time.Second, args...)
	if code != 0 || !strings.Contains(out, "all topics exist") {
		e.t.Fatalf("postbackd topics create: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	code, out, errOut = e.runBinary(30*time.Second, "topics", "check", "--config", e.configPath())
	if code != 0 {
		e.t.Fatalf("postbackd topics check after create: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	parts := partitionCounts(e.t, e.brokers, e.topicList(allRoles...))
	for topic, n := range parts {
		if n != e.partitions {
			e.t.Fatalf("topic %s has %d partitions, want %d (4: the default of topics create)", topic, n, e.partitions)
		}
	}
}

func (e *testEnv) topicList(roles ...string) []string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = e.topics[r]
	}
	return out
}

// member is one running `postbackd run` process.
type member struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	admin  string
	stderr string // path of its captured stderr
	done   chan struct{}
	code   int
}

// freePort picks a port that was free a moment ago: admin.addr
// 127.0.0.1:0 would not tell the test where the admin server listens.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// startMember starts `postbackd run --config F` with its own admin port and
// its stderr captured to a file; the test's cleanup kills it if it still
// runs and prints the file's tail when the test failed.
func (e *testEnv) startMember(name string) *member {
	e.t.Helper()
	return e.startMemberWith(name, e.configPath())
}

func (e *testEnv) startMemberWith(name, config string) *member {
	e.t.Helper()
	m := &member{t: e.t, name: name, admin: freePort(e.t), done: make(chan struct{})}
	m.stderr = filepath.Join(e.dir, fmt.Sprintf("%s-%d.stderr", name, time.Now().UnixNano()))
	f, err := os.Create(m.stderr)
	if err != nil {
		e.t.Fatal(err)
	}
	m.cmd = exec.Command(binary, "run", "--config", config)
	m.cmd.Env = e.childEnv("POSTBACKD_ADMIN_ADDR=" + m.admin)
	m.cmd.Stdout, m.cmd.Stderr = f, f
	if err := m.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		err := m.cmd.Wait()
		_ = f.Close()
		m.code = 0
		if err != nil {
			m.code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				m.code = ee.ExitCode()
			}
		}
		close(m.done)
	}()
	e.t.Cleanup(func() {
		if !m.exited() {
			_ = m.cmd.Process.Kill()
			<-m.done
		}
		if e.t.Failed() {
			e.t.Logf("--- tail of %s stderr (%s) ---\n%s", m.name, m.stderr, tail(m.stderr, 40))
		}
	})
	return m
}

func (m *member) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to exit and reports its exit code
// (-1 when killed by a signal) and whether it exited.
func (m *member) wait(timeout time.Duration) (int, bool) {
	select {
	case <-m.done:
		return m.code, true
	case <-time.After(timeout):
		return 0, false
	}
}

func (m *member) signal(sig syscall.Signal) {
	if err := m.cmd.Process.Signal(sig); err != nil && !m.exited() {
		m.t.Fatalf("signal %v to %s: %v", sig, m.name, err)
	}
}

// stop sends SIGTERM and requires a clean exit within the drain timeout
// plus a margin.
func (m *member) stop(within time.Duration) {
	m.t.Helper()
	if m.exited() {
		m.t.Fatalf("%s exited before it was stopped (code %d)\n%s", m.name, m.code, tail(m.stderr, 40))
	}
	m.signal(syscall.SIGTERM)
	code, ok := m.wait(within)
	if !ok {
		m.t.Fatalf("%s did not exit within %s of SIGTERM", m.name, within)
	}
	if code != 0 {
		m.t.Fatalf("%s exited with %d after SIGTERM\n%s", m.name, code, tail(m.stderr, 40))
	}
}

func (m *member) log() string {
	b, err := os.ReadFile(m.stderr)
	if err != nil {
		m.t.Fatal(err)
	}
	return string(b)
}

// get fetches a path of the member's admin server.
func (m *member) get(path string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + m.admin + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitReady waits until /readyz answers 200: the member joined the group.
func (m *member) waitReady(timeout time.Duration) {
	m.t.Helper()
	var last string
	ok := waitFor(timeout, func() bool {
		if m.exited() {
			return true
		}
		code, body, err := m.get("/readyz")
		last = fmt.Sprintf("%d %s %v", code, body, err)
		return code == http.StatusOK
	})
	if m.exited() {
		m.t.Fatalf("%s exited (code %d) before it was ready\n%s", m.name, m.code, tail(m.stderr, 40))
	}
	if !ok {
		m.t.Fatalf("%s not ready within %s; last /readyz: %s", m.name, timeout, last)
	}
}

// waitFor polls cond until it holds or timeout passes; it reports whether
// cond held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	return testinfra.Eventually(timeout, cond)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// delayedLease is delayed.lease: at least the claim lease of the partners'
// settings in the template (timeout, 3 quick attempts, max_interval 50ms),
// and 20s as before.
func (e *testEnv) delayedLease() time.Duration {
	p := config.Partner{Timeout: e.partnerTimeout, Retry: config.RetryPolicy{QuickAttempts: 3, MaxInterval: 50 * time.Millisecond}}
	return max(20*time.Second, p.ClaimLease()+time.Second)
}
