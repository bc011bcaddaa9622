package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestSendTest: one marked test postback reaches the partner's endpoint
// with test ids, its answer is judged by the partner's success rule, and
// the token is shown redacted only.
func TestSendTest(t *testing.T) {
	const token = "s3cret-send-test-token"
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.URL.RequestURI())
		mu.Unlock()
		if r.URL.Query().Get("goal") == "rdep" {
			fmt.Fprint(w, "ERROR: unknown transaction")
			return
		}
		fmt.Fprint(w, "OK")
	}))
	defer srv.Close()
	cfgPath := filepath.Join(t.TempDir(), "postbackd.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
kafka: {brokers: ["127.0.0.1:1"]}
redis: {addrs: ["127.0.0.1:1"]}
partners:
  net:
    token: {env: NET_TOKEN}
    allowed_hosts: [127.0.0.1]
    retry: {quick_attempts: 1}
    success: {statuses: [200], body_pattern: "^OK"}
    goals:
      reg:  {url: "%[1]s/pb?goal={goal}&click={click_id}&tx={transaction_id}&key={token}"}
      ftd:  {url: "%[1]s/pb?goal={goal}&click={click_id}&tx={transaction_id}&amount={amount}&cur={currency}&s={conv_status}&key={token}"}
      rdep: {url: "%[1]s/pb?goal={goal}&click={click_id}&tx={transaction_id}&key={token}"}
merchants:
  m1: {default_partner: net}
`, srv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"NET_TOKEN": token})
	send := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append([]string{"send-test", "--config", cfgPath}, args...), env, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	code, out, errOut := send("--partner", "net")
	if code != 0 || !strings.Contains(out, "goal ftd, status pending") || !strings.Contains(out, "accepted by the partner's success rule: yes") ||
		!strings.Contains(out, "key=[REDACTED]") || !strings.Contains(out, "amount=1.00&cur=EUR") {
		t.Errorf("send-test of the default goal: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, token) {
		t.Errorf("send-test printed the token:\n%s%s", out, errOut)
	}
	code, out, _ = send("--partner", "net", "--goal", "rdep")
	if code != 1 || !strings.Contains(out, "accepted by the partner's success rule: no") || !strings.Contains(out, "ERROR: unknown transaction") {
		t.Errorf("send-test refused in the body: exit %d\n%s", code, out)
	}
	for _, bad := range [][]string{{"--partner", "nope"}, {"--partner", "net", "--goal", "revshare"}, {"--partner", "net", "--currency", "XXY"}} {
		if code, _, errOut := send(bad...); code != 2 || errOut == "" {
			t.Errorf("send-test %v: exit %d, want 2 with a reason", bad, code)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("the endpoint got %d requests, want 2 (one per accepted invocation): %v", len(got), got)
	}
	for _, u := range got {
		if !strings.Contains(u, "click="+testIDPrefix) || !strings.Contains(u, "tx="+testIDPrefix) || !strings.Contains(u, "key="+token) {
			t.Errorf("request %s lacks the test ids or the token", u)
		}
	}
	if got[0] == got[1] {
		t.Error("two test postbacks share their ids")
	}
}
