package dispatcher

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/postback"
)

// TestExampleConfigsGolden loads every examples/*.yaml through config.Load
// and renders each goal of each partner, so that a change to an example or
// to rendering shows up as a diff of testdata/example-*.golden.
func TestExampleConfigsGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs found (%v)", err)
	}
	const exampleToken = "ex+ample/token="
	for _, src := range files {
		name := strings.TrimSuffix(filepath.Base(src), ".yaml")
		t.Run(name, func(t *testing.T) {
			// Copy the example next to the secret files it names, so that
			// relative secret paths resolve without touching examples/.
			dir := t.TempDir()
			raw, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "config.yaml")
			if err := os.WriteFile(path, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
				t.Fatal(err)
			}
			// Every secret file any example names gets the example token.
			for _, f := range []string{"secrets/datingnet.token"} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(exampleToken+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			// Token variables (SCALEO_TOKEN, …) get the example token; the
			// POSTBACKD_* overrides stay unset.
			getenv := func(k string) string {
				if strings.HasSuffix(k, "_TOKEN") && !strings.HasPrefix(k, "POSTBACKD_") {
					return exampleToken
				}
				return ""
			}
			cfg, err := config.Load(path, getenv)
			if err != nil {
				t.Fatalf("config.Load: %v", err)
			}
			env := newEnv(t, cfg.Partners)

			var b strings.Builder
			partners := make([]string, 0, len(cfg.Partners))
			for p := range cfg.Partners {
				partners = append(partners, p)
			}
			sort.Strings(partners)
			for _, partner := range partners {
				for _, goal := range postback.Goals {
					if !env.d.HasGoal(partner, goal) {
						continue
					}
					pb := examplePostback(partner, goal)
					r, err := env.d.Render(pb)
					if err != nil {
						t.Fatalf("%s %s: %v", partner, goal, err)
					}
					if strings.Contains(r.Redacted, "ex+ample") || strings.Contains(r.Redacted, "ex%2Bample") {
						t.Errorf("%s %s: token in %q", partner, goal, r.Redacted)
					}
					fmt.Fprintf(&b, "%s %s %s\n", partner, goal, r.Redacted)
					for _, w := range r.Warnings {
						fmt.Fprintf(&b, "%s %s warning: %s\n", partner, goal, w)
					}
				}
			}
			compareGolden(t, filepath.Join("testdata", "example-"+name+".golden"), b.String())
		})
	}
}

func examplePostback(partner string, goal postback.Goal) postback.Postback {
	p := postback.Postback{
		Partner: partner, Goal: goal, Merchant: "casino-1", ClickID: "clk-123",
		EventID: "ev-9", PlayerID: "pl-5",
		Params: map[string]string{
			"custom2": "c2", "custom3": "c 3", "custom4": "c&4", "offer_id": "offer-7",
			"tr": "trID_1234567_aff42-T9981-c77f3-sub7_trID",
		},
		CreatedAt:  time.Date(2026, 11, 23, 10, 30, 0, 0, time.UTC),
		OccurredAt: time.Date(2026, 11, 23, 10, 30, 0, 0, time.UTC),
	}
	switch goal {
	case postback.GoalFTD:
		p.Status = postback.StatusPending
	case postback.GoalFTDStatus:
		p.Status, p.FTDEventID = postback.StatusApproved, "ev-1"
	}
	if goal != postback.GoalReg && goal != postback.GoalTrial {
		p.HasAmount, p.Amount, p.Currency = true, decimal.RequireFromString("49.9"), "EUR"
	}
	p.ID = postback.NewID(partner, goal, p.EventID, p.Status)
	return p
}

// Every macro config documents has a value once rendered.
func TestRenderEveryDocumentedMacro(t *testing.T) {
	var macros []string
	for _, m := range config.Macros {
		switch m.Name {
		case "param.<name>":
			macros = append(macros, "param.custom2")
		case "tr.<field>":
			macros = append(macros, "tr.id")
		default:
			macros = append(macros, m.Name)
		}
	}
	var q []string
	for i, m := range macros {
		q = append(q, fmt.Sprintf("m%d={%s}", i, m))
	}
	pc := config.Partner{
		Goals:         map[postback.Goal]config.GoalConfig{postback.GoalFTD: {URL: "https://h.example/pb?" + strings.Join(q, "&")}},
		Token:         config.SecretRef{Value: "tok"},
		AllowedHosts:  []string{"h.example"},
		TrackerString: config.TrackerString{Param: "tr", Pattern: "trID_{id}_{rest}"},
	}
	env := newEnv(t, map[string]config.Partner{"p": pc})
	p := examplePostback("p", postback.GoalFTD)
	p.Params["tr"] = "trID_1_x"
	r, err := env.d.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	tu, err := url.Parse(r.target)
	if err != nil {
		t.Fatal(err)
	}
	u := tu.Query()
	for i, m := range macros {
		if u.Get(fmt.Sprintf("m%d", i)) == "" {
			t.Errorf("macro {%s} rendered empty", m)
		}
	}
}
