package tracker

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// get sends a GET and returns the answer; it reports an error with
// t.Errorf (not Fatal) so goroutines may call it too.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, ""
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Errorf("read body: %v", err)
	}
	return res.StatusCode, string(b)
}

func TestRecordsOnlyAccepted(t *testing.T) {
	tests := []struct {
		status int
		kept   bool
	}{
		{200, true},
		{201, true},
		{204, true},
		{299, true},
		{302, false},
		{400, false},
		{404, false},
		{500, false},
		{503, false},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			var seen []Request
			var mu sync.Mutex
			tr := New(Options{
				Respond: func(*http.Request) (int, string) { return tt.status, "body" },
				OnRequest: func(r Request) {
					mu.Lock()
					defer mu.Unlock()
					seen = append(seen, r)
				},
			})
			srv := httptest.NewServer(tr)
			defer srv.Close()
			status, _ := get(t, srv.URL+"/pb?click_id=c1")
			if status != tt.status {
				t.Fatalf("status = %d, want %d", status, tt.status)
			}
			wantCount := int64(0)
			if tt.kept {
				wantCount = 1
			}
			if got := tr.Count(); got != wantCount {
				t.Errorf("Count() = %d, want %d", got, wantCount)
			}
			if got := len(tr.Requests()); int64(got) != wantCount {
				t.Errorf("len(Requests()) = %d, want %d", got, wantCount)
			}
			// OnRequest sees every request, accepted or not.
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 1 || seen[0].Path != "/pb" || seen[0].Query.Get("click_id") != "c1" {
				t.Errorf("OnRequest saw %+v, want one request to /pb with click_id c1", seen)
			}
		})
	}
}

func TestDefaultAnswerAndRecordedFields(t *testing.T) {
	tr := New(Options{})
	srv := httptest.NewServer(tr)
	defer srv.Close()
	before := time.Now()
	status, body := get(t, srv.URL+"/track/conv?click_id=a%20b&amount=10.50&x=1&x=2")
	if status != http.StatusOK || body != "OK" {
		t.Fatalf("answer = %d %q, want 200 \"OK\"", status, body)
	}
	reqs := tr.Requests()
	if len(reqs) != 1 {
		t.Fatalf("recorded %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Path != "/track/conv" {
		t.Errorf("Path = %q", r.Path)
	}
	if got := r.Query.Get("click_id"); got != "a b" {
		t.Errorf("click_id = %q, want the decoded %q", got, "a b")
	}
	if got := r.Query["x"]; len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Errorf("x = %q, want [1 2]", got)
	}
	if r.At.Before(before) || r.At.After(time.Now()) {
		t.Errorf("At = %v, outside the request's time", r.At)
	}
}

func TestCountOnlyKeepsNoRequests(t *testing.T) {
	tr := New(Options{CountOnly: true})
	srv := httptest.NewServer(tr)
	defer srv.Close()
	for range 3 {
		get(t, srv.URL+"/pb")
	}
	if got := tr.Count(); got != 3 {
		t.Errorf("Count() = %d, want 3", got)
	}
	if got := tr.Requests(); len(got) != 0 {
		t.Errorf("Requests() = %d requests, want none with CountOnly", len(got))
	}
}

func TestRequestsIsACopy(t *testing.T) {
	tr := New(Options{})
	srv := httptest.NewServer(tr)
	defer srv.Close()
	get(t, srv.URL+"/one")
	got := tr.Requests()
	got[0].Path = "/changed"
	_ = append(got[:0], Request{Path: "/appended"})
	get(t, srv.URL+"/two")
	again := tr.Requests()
	if len(again) != 2 || again[0].Path != "/one" || again[1].Path != "/two" {
		t.Errorf("Requests() after the caller changed its copy = %+v, want /one then /two", again)
	}
}

func TestSetResponderWhileServing(t *testing.T) {
	tr := New(Options{Respond: func(*http.Request) (int, string) { return http.StatusServiceUnavailable, "busy" }})
	srv := httptest.NewServer(tr)
	defer srv.Close()

	// Concurrent requests while the responder changes: the race detector
	// checks the swap; the counts check that each answer matched the
	// responder in force.
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for i := range 20 {
		if i == 10 {
			tr.SetResponder(func(*http.Request) (int, string) { return http.StatusOK, "fine" })
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, body := get(t, srv.URL+"/pb")
			switch {
			case status == http.StatusOK && body == "fine":
				mu.Lock()
				accepted++
				mu.Unlock()
			case status == http.StatusServiceUnavailable && body == "busy":
			default:
				t.Errorf("answer %d %q from no responder", status, body)
			}
		}()
	}
	wg.Wait()
	if accepted < 10 {
		t.Errorf("%d requests accepted, want at least the 10 sent after SetResponder", accepted)
	}
	if got := tr.Count(); got != int64(accepted) {
		t.Errorf("Count() = %d, want the %d accepted answers", got, accepted)
	}

	tr.SetResponder(nil)
	if status, body := get(t, srv.URL+"/pb"); status != http.StatusOK || body != "OK" {
		t.Errorf("after SetResponder(nil): %d %q, want 200 \"OK\"", status, body)
	}
}

func TestWaitFor(t *testing.T) {
	tr := New(Options{})
	srv := httptest.NewServer(tr)
	defer srv.Close()
	two := func(rs []Request) bool { return len(rs) >= 2 }

	// Nothing arrives: false, after the timeout and not much later.
	start := time.Now()
	if tr.WaitFor(100*time.Millisecond, two) {
		t.Fatal("WaitFor reported true with no requests")
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("WaitFor returned after %s, want about the 100ms timeout", d)
	}

	// Requests arrive while waiting: true, as soon as they do.
	done := make(chan struct{})
	go func() {
		defer close(done)
		get(t, srv.URL+"/a")
		get(t, srv.URL+"/b")
	}()
	start = time.Now()
	if !tr.WaitFor(10*time.Second, two) {
		t.Fatalf("WaitFor reported false with %d requests", tr.Count())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("WaitFor took %s to see two requests", d)
	}
	<-done

	// The condition already holds: true at once, even with no time left.
	if !tr.WaitFor(0, two) {
		t.Error("WaitFor(0) reported false for a condition that holds")
	}
}
