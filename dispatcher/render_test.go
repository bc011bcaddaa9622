package dispatcher

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/postback"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// scaleoPartner is a Scaleo-style network: /track/conv for conversions,
// /track/conv-change for the FTD's approval or rejection. Equivalent to the
// partner of the example configuration.
func scaleoPartner() config.Partner {
	const base = "https://tracker.scaleo.example/track/"
	conv := base + "conv?click_id={click_id}&goal={goal_alias}&amount={amount}&currency={currency}" +
		"&adv_event_id={transaction_id}&token={token}"
	return config.Partner{
		Goals: map[postback.Goal]config.GoalConfig{
			postback.GoalReg: {URL: base + "conv?click_id={click_id}&goal={goal_alias}&adv_event_id={transaction_id}&token={token}", Alias: "registration"},
			postback.GoalFTD: {URL: conv + "&conv_status={conv_status}", Alias: "ftd"},
			postback.GoalFTDStatus: {URL: base + "conv-change?click_id={click_id}&goal={goal_alias}&amount={amount}&currency={currency}" +
				"&conv_status={conv_status}&token={token}", Alias: "ftd"},
			postback.GoalRD:       {URL: conv, Alias: "rdep"},
			postback.GoalRevshare: {URL: conv + "&custom2={param.custom2}", Alias: "revshare"},
		},
		Token:        config.SecretRef{Value: "sc4le0+T0k/en="},
		AllowedHosts: []string{"tracker.scaleo.example"},
	}
}

// trackerPartner is a dating/cams network that decodes affiliates' composite
// tracker strings; one URL serves every goal and offer.
func trackerPartner() config.Partner {
	const u = "https://postback.datingtracker.example/pb?id={tr.id}&affid={tr.affid}&transid={tr.transid}" +
		"&clickid={tr.clickid}&extra={tr.extra}&event={goal_alias}&offer={offer_id}&amount={amount}" +
		"&currency={currency}&txid={transaction_id}&ts={timestamp}&key={token}"
	return config.Partner{
		Goals: map[postback.Goal]config.GoalConfig{
			postback.GoalReg:      {URL: u, Alias: "reg"},
			postback.GoalTrial:    {URL: u, Alias: "trial"},
			postback.GoalFTD:      {URL: u, Alias: "signup"},
			postback.GoalRD:       {URL: u, Alias: "rebill"},
			postback.GoalRevshare: {URL: u},
		},
		Token:         config.SecretRef{Value: "dating-key=1&2"},
		AllowedHosts:  []string{"postback.datingtracker.example"},
		TrackerString: config.TrackerString{Param: "tr", Pattern: "trID_{id}_{affid}-{transid}-{clickid}-{extra}_trID"},
		StatusWords:   map[string]string{postback.StatusPending: "new"},
	}
}

type goldenCase struct {
	name string
	pb   postback.Postback
}

func goldenCases(file string, mk func(goal postback.Goal) postback.Postback) []goldenCase {
	money := func(p postback.Postback, amount, cur string) postback.Postback {
		p.HasAmount, p.Amount, p.Currency = true, decimal.RequireFromString(amount), cur
		return p
	}
	noMoney := func(p postback.Postback) postback.Postback {
		p.HasAmount, p.Amount, p.Currency = false, decimal.Decimal{}, ""
		return p
	}
	status := func(p postback.Postback, s string) postback.Postback {
		p.Status = s
		p.ID = postback.NewID(p.Partner, p.Goal, p.EventID, s)
		return p
	}
	return map[string][]goldenCase{
		"scaleo": {
			{"ftd_pending", status(money(mk(postback.GoalFTD), "50", "EUR"), postback.StatusPending)},
			{"rdep", money(mk(postback.GoalRD), "25.5", "USD")},
			{"revshare", money(mk(postback.GoalRevshare), "-12.345", "USD")},
			{"reg", noMoney(mk(postback.GoalReg))},
			{"ftd_status_approved", status(money(mk(postback.GoalFTDStatus), "50", "EUR"), postback.StatusApproved)},
			{"ftd_status_rejected", status(money(mk(postback.GoalFTDStatus), "50", "EUR"), postback.StatusRejected)},
		},
		"trackerstring": {
			{"reg", noMoney(mk(postback.GoalReg))},
			{"trial", noMoney(mk(postback.GoalTrial))},
			{"ftd_signup", status(money(mk(postback.GoalFTD), "29.99", "USD"), postback.StatusPending)},
			{"rdep_rebill", money(mk(postback.GoalRD), "29.99", "USD")},
			{"revshare", money(mk(postback.GoalRevshare), "3000", "JPY")},
		},
	}[file]
}

func TestRenderGolden(t *testing.T) {
	env := newEnv(t, map[string]config.Partner{"scaleo": scaleoPartner(), "dating": trackerPartner()})
	created := time.Date(2026, 11, 23, 10, 30, 0, 0, time.UTC)
	for file, partner := range map[string]string{"scaleo": "scaleo", "trackerstring": "dating"} {
		t.Run(file, func(t *testing.T) {
			mk := func(goal postback.Goal) postback.Postback {
				return postback.Postback{
					ID: postback.NewID(partner, goal, "ev-42", ""), Partner: partner, Goal: goal,
					Merchant: "casino-1", ClickID: "clk 7&x=1", EventID: "ev-42", PlayerID: "player-9",
					Params: map[string]string{
						"custom2": "sub/aff #2", "offer_id": "offer-77",
						"tr": "trID_1234567_aff1-tx9-c77-x_trID",
					},
					CreatedAt:  created,
					OccurredAt: created,
				}
			}
			cases := goldenCases(file, mk)
			if file == "trackerstring" {
				bad := mk(postback.GoalReg)
				bad.Params = map[string]string{"tr": "not-a-tracker-string", "offer_id": "offer-77"}
				cases = append(cases, goldenCase{"reg_tracker_mismatch", bad})
			}
			var b strings.Builder
			for _, c := range cases {
				r, err := env.d.Render(c.pb)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				fmt.Fprintf(&b, "%s %s\n", c.name, r.Redacted)
				for _, w := range r.Warnings {
					fmt.Fprintf(&b, "%s warning: %s\n", c.name, w)
				}
				tok := env.d.partners[partner].token
				if strings.Contains(r.Redacted, tok) || strings.Contains(r.Redacted, url.QueryEscape(tok)) {
					t.Errorf("%s: token in Redacted", c.name)
				}
				if !strings.Contains(r.URL, url.QueryEscape(tok)) {
					t.Errorf("%s: URL lacks the escaped token", c.name)
				}
			}
			compareGolden(t, filepath.Join("testdata", file+".golden"), b.String())
		})
	}
}

func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestRenderTrackerFields(t *testing.T) {
	env := newEnv(t, map[string]config.Partner{"dating": trackerPartner()})
	p := testPostback("dating", postback.GoalFTD)
	p.Params = map[string]string{"tr": "trID_1234567_aff1-tx9-c77-x_trID"}
	r, err := env.d.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(r.URL)
	q := u.Query()
	for k, want := range map[string]string{"id": "1234567", "affid": "aff1", "transid": "tx9", "clickid": "c77", "extra": "x", "event": "signup"} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings %v", r.Warnings)
	}
	p.Params = nil
	r, err = env.d.Render(p)
	if err != nil || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], `"tr" missing`) {
		t.Errorf("missing tracker string: err %v warnings %q, want one warning", err, r.Warnings)
	}
}

func TestRenderEscaping(t *testing.T) {
	pc := config.Partner{
		Goals: map[postback.Goal]config.GoalConfig{
			postback.GoalReg: {URL: "https://T.Example.com:8443/c/{click_id}/p?cid={click_id}&s2={param.sub}&t={token}&pt={param.tok}"},
		},
		Token:        config.SecretRef{Value: testToken},
		AllowedHosts: []string{"t.example.com"},
	}
	env := newEnv(t, map[string]config.Partner{"p": pc})
	for _, v := range []string{"a&b=c", "with space", "ünï©ødé 日本", "frag#ment", "pct%20", "slash/../..", "q?x=1", "plus+sign", "@evil.example"} {
		t.Run(v, func(t *testing.T) {
			p := testPostback("p", postback.GoalReg)
			p.ClickID = v
			p.Params = map[string]string{"sub": v, "tok": "x" + testToken + "y"}
			r, err := env.d.Render(p)
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(r.URL)
			if err != nil {
				t.Fatalf("rendered URL does not parse: %v", err)
			}
			if u.Host != "T.Example.com:8443" || u.Fragment != "" {
				t.Errorf("host %q fragment %q: a value escaped its place", u.Host, u.Fragment)
			}
			q := u.Query()
			if q.Get("cid") != v || q.Get("s2") != v || q.Get("t") != testToken {
				t.Errorf("query round trip: cid %q s2 %q t %q", q.Get("cid"), q.Get("s2"), q.Get("t"))
			}
			segs := strings.Split(u.EscapedPath(), "/")
			if len(segs) != 4 {
				t.Fatalf("path %q has %d segments, want 4", u.EscapedPath(), len(segs))
			}
			if got, _ := url.PathUnescape(segs[2]); got != v {
				t.Errorf("path segment = %q, want %q", got, v)
			}
			for _, form := range []string{testToken, url.QueryEscape(testToken), url.PathEscape(testToken)} {
				if strings.Contains(r.Redacted, form) {
					t.Errorf("Redacted %q contains the token as %q", r.Redacted, form)
				}
			}
			if !strings.Contains(r.Redacted, "t="+redacted) || !strings.Contains(r.Redacted, "pt=x"+redacted+"y") {
				t.Errorf("Redacted = %q, want t= and pt= redacted", r.Redacted)
			}
		})
	}
}

// The token also leaves the path redacted (path escaping differs).
func TestRedactTokenInPath(t *testing.T) {
	pc := config.Partner{
		Goals:        map[postback.Goal]config.GoalConfig{postback.GoalReg: {URL: "https://h.example/k/{token}/pb?c={click_id}"}},
		Token:        config.SecretRef{Value: testToken},
		AllowedHosts: []string{"h.example"},
	}
	env := newEnv(t, map[string]config.Partner{"p": pc})
	r, err := env.d.Render(testPostback("p", postback.GoalReg))
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://h.example/k/a+b%2Fc=/pb?c=click-1"; r.URL != want {
		t.Errorf("URL = %q, want %q", r.URL, want)
	}
	if want := "https://h.example/k/" + redacted + "/pb?c=click-1"; r.Redacted != want {
		t.Errorf("Redacted = %q, want %q", r.Redacted, want)
	}
}

func TestRenderErrors(t *testing.T) {
	env := newEnv(t, map[string]config.Partner{"scaleo": scaleoPartner()})
	p := testPostback("nobody", postback.GoalReg)
	if _, err := env.d.Render(p); !errors.Is(err, ErrUnknownPartner) {
		t.Errorf("unknown partner: %v", err)
	}
	p = testPostback("scaleo", postback.GoalTrial)
	if _, err := env.d.Render(p); !errors.Is(err, ErrGoalNotConfigured) {
		t.Errorf("goal not configured: %v", err)
	}
	if res := env.d.Send(t.Context(), p); !res.Permanent || res.Attempts != 0 || !errors.Is(res.Err, ErrGoalNotConfigured) {
		t.Errorf("Send of an unconfigured goal: %+v", res)
	}
	if env.d.HasGoal("scaleo", postback.GoalTrial) || !env.d.HasGoal("scaleo", postback.GoalFTD) || env.d.HasGoal("nobody", postback.GoalFTD) {
		t.Error("HasGoal wrong")
	}

	// The render-time host check is defence in depth behind New's template
	// check; simulate a template whose host is no longer allowed.
	env.d.partners["scaleo"].allowed = []allowedHost{{host: "other.example"}}
	p = testPostback("scaleo", postback.GoalFTD)
	r, err := env.d.Render(p)
	if !errors.Is(err, ErrHostNotAllowed) {
		t.Fatalf("host not allowed: %v", err)
	}
	if strings.Contains(err.Error(), "sc4le0") || strings.Contains(r.Redacted, "sc4le0") {
		t.Errorf("token leaked: %v / %q", err, r.Redacted)
	}
	if res := env.d.Send(t.Context(), p); !res.Permanent || res.Attempts != 0 || !errors.Is(res.Err, ErrHostNotAllowed) {
		t.Errorf("Send to a host not allowed: %+v", res)
	}
}

func TestHostAllowed(t *testing.T) {
	tests := []struct {
		allowed    string
		host, port string
		want       bool
	}{
		{"tracker.example", "tracker.example", "", true},
		{"tracker.example", "TRACKER.Example", "", true},
		{"Tracker.Example", "tracker.example", "8443", true}, // port-insensitive
		{"tracker.example:8443", "tracker.example", "8443", true},
		{"tracker.example:8443", "tracker.example", "443", false},
		{"tracker.example:8443", "tracker.example", "", false},
		{"tracker.example", "evil-tracker.example", "", false},
		{"tracker.example", "tracker.example.evil", "", false},
		{"tracker.example", "sub.tracker.example", "", false}, // exact, no subdomains
		{"127.0.0.1", "127.0.0.1", "5555", true},
		{"[::1]:80", "::1", "80", true},
		{"::1", "::1", "80", true},
	}
	for _, tt := range tests {
		ah, err := parseAllowedHost(tt.allowed)
		if err != nil {
			t.Fatalf("%q: %v", tt.allowed, err)
		}
		p := &partner{allowed: []allowedHost{ah}}
		if got := p.hostAllowed(tt.host, tt.port); got != tt.want {
			t.Errorf("allowed %q, host %q port %q: %v, want %v", tt.allowed, tt.host, tt.port, got, tt.want)
		}
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	good := scaleoPartner()
	tests := []struct {
		name    string
		mutate  func(*config.Partner)
		wantAll []string
	}{
		{"unknown macro", func(p *config.Partner) {
			p.Goals[postback.GoalReg] = config.GoalConfig{URL: "https://tracker.scaleo.example/x?a={nope}"}
		}, []string{"partners.bad.goals.reg.url", "nope"}},
		{"macro in host", func(p *config.Partner) {
			p.Goals[postback.GoalReg] = config.GoalConfig{URL: "https://{param.host}/x"}
		}, []string{"partners.bad.goals.reg.url", "host may not contain a macro"}},
		{"host not allowed", func(p *config.Partner) {
			p.Goals[postback.GoalReg] = config.GoalConfig{URL: "https://evil.example/x?c={click_id}"}
		}, []string{"partners.bad.goals.reg.url", ErrHostNotAllowed.Error()}},
		{"bad scheme", func(p *config.Partner) {
			p.Goals[postback.GoalReg] = config.GoalConfig{URL: "ftp://tracker.scaleo.example/x"}
		}, []string{"partners.bad.goals.reg.url", "http://"}},
		{"userinfo", func(p *config.Partner) {
			p.Goals[postback.GoalReg] = config.GoalConfig{URL: "https://u:p@tracker.scaleo.example/x"}
		}, []string{"user info"}},
		{"tr without tracker string", func(p *config.Partner) {
			p.Goals[postback.GoalReg] = config.GoalConfig{URL: "https://tracker.scaleo.example/x?a={tr.id}"}
		}, []string{"tr.id"}},
		{"two problems at once", func(p *config.Partner) {
			p.Goals[postback.GoalReg] = config.GoalConfig{URL: "https://tracker.scaleo.example/x?a={nope}"}
			p.Success.BodyPattern = "("
			p.AllowedHosts = append(p.AllowedHosts, "bad/host")
		}, []string{"goals.reg.url", "success.body_pattern", "allowed_hosts[1]"}},
		{"bad tracker pattern", func(p *config.Partner) {
			p.TrackerString = config.TrackerString{Param: "tr", Pattern: "x{a}{b}"}
		}, []string{"tracker_string.pattern", "no delimiter"}},
		{"tracker param missing", func(p *config.Partner) {
			p.TrackerString = config.TrackerString{Pattern: "x{a}"}
		}, []string{"tracker_string.param"}},
		{"no allowed hosts", func(p *config.Partner) { p.AllowedHosts = nil }, []string{"allowed_hosts: empty"}},
		{"unknown goal", func(p *config.Partner) {
			p.Goals["bonus"] = config.GoalConfig{URL: "https://tracker.scaleo.example/x"}
		}, []string{"goals.bonus", "unknown goal"}},
		{"negative rate", func(p *config.Partner) { p.RateLimit.PerSecond = -1 }, []string{"rate_limit.per_second"}},
		{"bad status", func(p *config.Partner) { p.Success.Statuses = []int{700} }, []string{"success.statuses"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := scaleoPartner()
			tt.mutate(&bad)
			_, err := New(map[string]config.Partner{"good": good, "bad": bad}, Options{})
			if err == nil {
				t.Fatal("New accepted a bad partner")
			}
			for _, w := range tt.wantAll {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "sc4le0") {
				t.Errorf("error leaks the token: %v", err)
			}
		})
	}
}

func TestFormatAmount(t *testing.T) {
	tests := []struct{ amount, currency, want string }{
		{"10", "USD", "10.00"},
		{"10.5", "USD", "10.50"},
		{"1000.4", "JPY", "1000"},
		{"1000.5", "JPY", "1001"}, // half away from zero
		{"1.2345", "KWD", "1.235"},
		{"1.2344", "KWD", "1.234"},
		{"-12.345", "USD", "-12.35"},
		{"-0.004", "USD", "0.00"},
		{"0", "EUR", "0.00"},
		{"123456789012345.678", "EUR", "123456789012345.68"},
		{"7", "XYZ", "7.00"}, // unknown currency: 2 digits
		{"7", "", "7.00"},
		{"2.5", "CLF", "2.5000"}, // 4 minor units
	}
	d := newEnv(t, nil).d
	for _, tt := range tests {
		if got := d.FormatAmount(decimal.RequireFromString(tt.amount), tt.currency); got != tt.want {
			t.Errorf("FormatAmount(%s, %q) = %q, want %q", tt.amount, tt.currency, got, tt.want)
		}
	}
}

func TestNextDelayAndMaxAge(t *testing.T) {
	pc := scaleoPartner()
	pc.Retry = config.RetryPolicy{QuickAttempts: 3, DelayedInitial: 10 * time.Second, DelayedMax: 100 * time.Second, MaxAge: time.Hour}
	d := newEnv(t, map[string]config.Partner{"s": pc}).d
	tests := []struct {
		attempts int
		lo, hi   time.Duration
	}{
		{0, 10 * time.Second, 12500 * time.Millisecond},
		{3, 10 * time.Second, 12500 * time.Millisecond}, // round 0: 10s ±25 %, floored at 10s
		{4, 15 * time.Second, 25 * time.Second},         // round 1: 20s ±25 %
		{9, 30 * time.Second, 50 * time.Second},         // round 2: 40s ±25 %
		{12, 60 * time.Second, 100 * time.Second},       // round 3: 80s ±25 %, capped
		{10000, 75 * time.Second, 100 * time.Second},    // capped at 100s, jittered below
	}
	for _, tt := range tests {
		seen := map[time.Duration]bool{}
		for range 200 {
			got := d.NextDelay("s", tt.attempts)
			if got < tt.lo || got > tt.hi {
				t.Fatalf("NextDelay(%d) = %v, want in [%v, %v]", tt.attempts, got, tt.lo, tt.hi)
			}
			seen[got] = true
		}
		if len(seen) < 2 {
			t.Errorf("NextDelay(%d) never varies: no jitter", tt.attempts)
		}
	}
	if got := d.NextDelay("unknown", 1); got < config.DefaultDelayedInitial || got > config.DefaultDelayedMax {
		t.Errorf("unknown partner delay %v", got)
	}
	if d.MaxAge("s") != time.Hour || d.MaxAge("unknown") != 24*time.Hour {
		t.Errorf("MaxAge = %v / %v", d.MaxAge("s"), d.MaxAge("unknown"))
	}
}
