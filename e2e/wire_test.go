package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/postbackd/postbackd/schemas"
)

// kcat runs kcat with stdin and returns its stdout.
func kcat(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

// kcatProduce produces msgs with kcat, one topic at a time in the script's
// order, "key|value" per line.
func (e *testEnv) kcatProduce(msgs []inMsg) {
	e.t.Helper()
	for _, role := range inputRoles {
		var b bytes.Buffer
		for _, m := range msgs {
			if m.role != role {
				continue
			}
			if bytes.ContainsAny(m.value, "|\n") || strings.ContainsAny(m.key, "|\n") {
				e.t.Fatalf("message of %s cannot be written as one kcat line: %s", m.key, m.value)
			}
			b.WriteString(m.key + "|")
			b.Write(m.value)
			b.WriteByte('\n')
		}
		if b.Len() > 0 {
			kcat(e.t, b.Bytes(), "-P", "-b", strings.Join(e.brokers, ","), "-t", e.topics[role], "-K", "|")
		}
	}
}

// TestWireFormat drives postbackd with an independent client: kcat produces
// the input events and reads the audit topic back. Keys are click ids and
// every audit value is valid per schemas/audit.schema.json.
func TestWireFormat(t *testing.T) {
	requireInfra(t)
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Skip("kcat is not installed (Debian package kcat; .ci/run installs it): " + err.Error())
	}
	sc := newScript(scriptOptions{scaleoClicks: 40, datingClicks: 20, seed: 5})
	e := newEnv(t, envOptions{plan: sc.plan, createTopics: true})
	outs := e.startOutputs()
	a := e.startMember("a")
	a.waitReady(readyTimeout)

	e.kcatProduce(sc.phases[0])
	if !waitFor(phase0Timeout, func() bool { return outs.audited(sc.regEvents) == len(sc.regEvents) }) {
		t.Fatalf("only %d of %d registrations audited within %s", outs.audited(sc.regEvents), len(sc.regEvents), phase0Timeout)
	}
	e.waitCommitted(phase0Timeout, roleRegistrations, roleQualifications)
	e.kcatProduce(sc.phases[1])
	e.waitComplete(sc, outs, completeTimeout, a)
	out := e.finish(outs, a)
	e.verify(sc, out, verifyOptions{exactOutputs: true})

	set, err := schemas.Compile()
	if err != nil {
		t.Fatal(err)
	}
	raw := kcat(t, nil, "-C", "-b", strings.Join(e.brokers, ","), "-t", e.topics[roleDispatched], "-o", "beginning", "-e", "-q", "-f", "%k %s\n")
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) != len(out.audits) {
		t.Errorf("kcat read %d audit records, the kafka-go reader %d", len(lines), len(out.audits))
	}
	for i, line := range lines {
		key, value, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("audit line %d has no key/value separator: %q", i, line)
		}
		if err := set.ValidateJSON("audit", []byte(value)); err != nil {
			t.Errorf("audit record %d does not match schemas/audit.schema.json: %v\n%s", i, err, value)
			continue
		}
		var rec struct {
			ClickID string `json:"click_id"`
		}
		if err := json.Unmarshal([]byte(value), &rec); err != nil {
			t.Fatal(err)
		}
		if key != rec.ClickID {
			t.Errorf("audit record %d keyed %q, its click_id is %q", i, key, rec.ClickID)
		}
		for name, tok := range e.tokens {
			if strings.Contains(value, tok) {
				t.Errorf("audit record %d carries the secret of %s", i, name)
			}
		}
	}
	t.Logf("kcat produced %d events and read %d audit records, all valid and keyed by click_id", sc.events, len(lines))
}

// TestStartupChecks: a missing topic stops `postbackd run` with a non-zero
// exit naming the topic; an invalid configuration exits 2 listing every
// problem with its key path.
func TestStartupChecks(t *testing.T) {
	t.Run("missing topic", func(t *testing.T) {
		e := newEnv(t, envOptions{createTopics: true})
		topics := map[string]string{}
		for r, name := range e.topics {
			topics[r] = name
		}
		missing := e.topics[roleDLQ] + ".missing"
		topics[roleDLQ] = missing
		path := e.writeConfig("missing-topic.yaml", topics)

		code, out, errOut := e.runBinary(30*time.Second, "topics", "check", "--config", path)
		if code != 1 || !strings.Contains(errOut, missing) {
			t.Errorf("topics check with a missing topic: exit %d, want 1 naming %s\nstdout: %s\nstderr: %s", code, missing, out, errOut)
		}
		m := e.startMemberWith("run", path)
		code, ok := m.wait(60 * time.Second)
		if !ok {
			t.Fatalf("postbackd run with a missing topic still runs after 60s")
		}
		log := m.log()
		if code == 0 || !strings.Contains(log, missing) {
			t.Errorf("postbackd run with a missing topic: exit %d, want non-zero with stderr naming %s\n%s", code, missing, log)
		}
		for _, present := range e.topics {
			if present != e.topics[roleDLQ] && strings.Contains(log, "missing topics: "+present) {
				t.Errorf("stderr names existing topic %s as missing", present)
			}
		}
	})

	t.Run("invalid config", func(t *testing.T) {
		requireInfra(t)
		// Five mistakes in different sections; every one must be reported,
		// with its key path, in one run.
		cfg := `
kafka:
  brokers: ["localhost"]
redis:
  addrs: ["127.0.0.1:6379"]
  key_prefix: "a{b}"
consumer:
  start_offset: middle
log:
  level: loud
partners:
  scaleo:
    allowed_hosts: [127.0.0.1]
    goals:
      ftd: {url: "http://tracker.example.com/conv?click_id={click_id}"}
merchants:
  casino: {default_partner: nope}
`
		path := t.TempDir() + "/invalid.yaml"
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary, "run", "--config", path)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Fatalf("postbackd run with an invalid config: %v, want exit code 2\n%s", err, errb.String())
		}
		for _, key := range []string{
			"kafka.brokers[0]", "redis.key_prefix", "consumer.start_offset", "log.level",
			"partners.scaleo.goals.ftd.url", "merchants.casino.default_partner",
		} {
			if !strings.Contains(errb.String(), key+":") {
				t.Errorf("stderr does not report %s:\n%s", key, errb.String())
			}
		}
	})
}
