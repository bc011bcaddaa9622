package admin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// start runs a server on 127.0.0.1:0 for the test and stops it at the end,
// checking that Run returned nil.
func start(t *testing.T, reg *prometheus.Registry, checks map[string]Check) *Server {
	t.Helper()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s, err := New("127.0.0.1:0", reg, checks)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after cancel = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of cancel")
		}
	})
	return s
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return res.StatusCode, string(b)
}

func TestAddrIsTheListeningPort(t *testing.T) {
	s := start(t, nil, nil)
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil {
		t.Fatalf("Addr() = %q: %v", s.Addr(), err)
	}
	if host != "127.0.0.1" || port == "0" {
		t.Errorf("Addr() = %q, want 127.0.0.1 and the port picked", s.Addr())
	}
	if status, _ := get(t, "http://"+s.Addr()+"/healthz"); status != http.StatusOK {
		t.Errorf("/healthz at Addr() = %d", status)
	}
}

func TestHealthz(t *testing.T) {
	// Liveness does not depend on readiness: a failing check leaves it 200.
	s := start(t, nil, map[string]Check{"redis": func(context.Context) error { return errors.New("down") }})
	status, body := get(t, "http://"+s.Addr()+"/healthz")
	if status != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 \"ok\\n\"", status, body)
	}
}

func TestReadyz(t *testing.T) {
	ok := func(context.Context) error { return nil }
	tests := []struct {
		name       string
		checks     map[string]Check
		wantStatus int
		wantLines  []string
		notInBody  []string
	}{
		{name: "no checks", wantStatus: http.StatusOK},
		{
			name:       "all pass",
			checks:     map[string]Check{"kafka": ok, "redis": ok, "consumer_group": ok},
			wantStatus: http.StatusOK,
			wantLines:  []string{"kafka: ok", "redis: ok", "consumer_group: ok"},
		},
		{
			name: "one fails",
			checks: map[string]Check{"kafka": ok, "consumer_group": ok,
				"redis": func(context.Context) error { return errors.New("connection refused") }},
			wantStatus: http.StatusServiceUnavailable,
			wantLines:  []string{"redis: connection refused", "kafka: ok", "consumer_group: ok"},
			notInBody:  []string{"redis: ok"},
		},
		{
			name: "two fail",
			checks: map[string]Check{"redis": ok,
				"kafka":          func(context.Context) error { return errors.New("missing topics: a, b") },
				"consumer_group": func(context.Context) error { return errors.New("not a member") }},
			wantStatus: http.StatusServiceUnavailable,
			wantLines:  []string{"kafka: missing topics: a, b", "consumer_group: not a member", "redis: ok"},
		},
		{
			name: "a check gets a deadline",
			checks: map[string]Check{"slow": func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					return errors.New("no deadline")
				}
				return nil
			}},
			wantStatus: http.StatusOK,
			wantLines:  []string{"slow: ok"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, nil, tt.checks)
			status, body := get(t, "http://"+s.Addr()+"/readyz")
			if status != tt.wantStatus {
				t.Errorf("status = %d, want %d; body:\n%s", status, tt.wantStatus, body)
			}
			lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
			if body == "" {
				lines = nil
			}
			if len(lines) != len(tt.wantLines) {
				t.Errorf("body has %d lines, want %d:\n%s", len(lines), len(tt.wantLines), body)
			}
			for _, want := range tt.wantLines {
				found := false
				for _, l := range lines {
					found = found || l == want
				}
				if !found {
					t.Errorf("body lacks line %q:\n%s", want, body)
				}
			}
			for _, s := range tt.notInBody {
				if strings.Contains(body, s) {
					t.Errorf("body holds %q:\n%s", s, body)
				}
			}
		})
	}
}

func TestMetricsServesTheRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "admin_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	s := start(t, reg, nil)
	status, body := get(t, "http://"+s.Addr()+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics = %d", status)
	}
	if !strings.Contains(body, "admin_test_things_total 3") {
		t.Errorf("/metrics lacks the registered counter:\n%s", body)
	}
	// Only this registry: nothing from the global default one.
	if strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics serves the default registry too:\n%s", body)
	}
}

func TestOnlyGET(t *testing.T) {
	s := start(t, nil, nil)
	res, err := http.Post("http://"+s.Addr()+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", res.StatusCode)
	}
	if status, _ := get(t, "http://"+s.Addr()+"/nope"); status != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", status)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	s, err := New("127.0.0.1:0", prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	// Serving: wait for an answer rather than sleeping.
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, bounded by deadline
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	// The port is released.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Run returned", addr)
	}
}

func TestNewReportsAnAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := New(ln.Addr().String(), prometheus.NewRegistry(), nil); err == nil {
		t.Errorf("New on %s (in use) succeeded", ln.Addr())
	}
}
