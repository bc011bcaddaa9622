package pipeline_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/dispatcher"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/internal/service"
	"github.com/postbackd/postbackd/pipeline"
	"github.com/postbackd/postbackd/postback"
)

// TestPreviewMatchesPipeline: what Preview renders for an event (the
// `postbackd render` command) is, query for query, what the pipeline sends
// for it — for both partner styles, every goal, a revshare with a percent, a
// status change with its FTD's amount.
func TestPreviewMatchesPipeline(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cfg, err := config.Load(h.cfgPath, getenv)
	if err != nil {
		t.Fatal(err)
	}
	disp, err := dispatcher.New(cfg.Partners, dispatcher.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := event.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tr := map[string]string{"tr": "trID_77_aff9-T1-c2-x_trID", "offer_id": "o-5", "custom2": "c2v"}

	type step struct {
		topic string
		kind  event.Kind
		e     ev
		goal  postback.Goal // the postback the pipeline makes of it
	}
	for _, tc := range []struct {
		name, merchant, network, token string
		steps                          []step
	}{
		{name: "tracker-string partner", merchant: "trk", network: "beta", token: tokens["BETA_TOKEN"], steps: []step{
			{h.topics.Registrations, event.KindRegistration, registration("trk", "trial", "beta", tr), postback.GoalTrial},
			{h.topics.Deposits, event.KindDeposit, deposit("trk", "19.90", "EUR", "succeeded"), postback.GoalFTD},
			{h.topics.Deposits, event.KindDeposit, deposit("trk", "9.95", "EUR", "succeeded"), postback.GoalRD},
			{h.topics.Revenue, event.KindRevenue, revenue("trk", "4.00", "EUR"), postback.GoalRevshare},
			{h.topics.Qualifications, event.KindQualification, qualification("trk", "approved"), postback.GoalFTDStatus},
		}},
		{name: "query partner, revshare percent", merchant: "casino", network: "alpha", token: tokens["ALPHA_TOKEN"], steps: []step{
			{h.topics.Registrations, event.KindRegistration, registration("casino", "registration", "alpha", map[string]string{"custom2": "z"}), postback.GoalReg},
			{h.topics.Deposits, event.KindDeposit, deposit("casino", "1000", "JPY", "succeeded"), postback.GoalFTD},
			{h.topics.Revenue, event.KindRevenue, revenue("casino", "10.01", "KWD"), postback.GoalRevshare},
			{h.topics.Qualifications, event.KindQualification, qualification("casino", "rejected"), postback.GoalFTDStatus},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			click := "pv-" + strings.ReplaceAll(tc.name, " ", "-")
			var ftd *pipeline.PreviewFTD
			for i, s := range tc.steps {
				m, _ := h.msg(s.topic, click, s.e)
				h.produce(t, m)
				got := h.waitAccepted(t, click, i+1)[i]

				ev, err := dec.Decode(s.kind, m.Value)
				if err != nil {
					t.Fatal(err)
				}
				// What the click knows after the registration: its network and
				// params (the registration named the network itself).
				rt := pipeline.PreviewRoute{Partner: tc.network, Via: dedupe.RouteClick, Params: clickParams(t, tc.steps[0].e, ev)}
				rt.FTD = ftd
				planned, none, err := pipeline.Preview(service.PipelineConfig(cfg), disp, ev, rt, now)
				if err != nil || none != "" {
					t.Fatalf("step %d: Preview: %v %q", i, err, none)
				}
				var pb *postback.Postback
				for j := range planned {
					if planned[j].Postback.Goal == s.goal && planned[j].Skip == "" {
						pb = &planned[j].Postback
					}
				}
				if pb == nil {
					t.Fatalf("step %d: Preview planned %+v, no %s to send", i, planned, s.goal)
				}
				if s.goal == postback.GoalFTD {
					ftd = &pipeline.PreviewFTD{EventID: pb.EventID, Amount: pb.Amount, Currency: pb.Currency}
				}
				r, err := disp.Render(*pb)
				if err != nil {
					t.Fatal(err)
				}
				u, err := url.Parse(strings.ReplaceAll(r.Redacted, "[REDACTED]", url.QueryEscape(tc.token)))
				if err != nil {
					t.Fatal(err)
				}
				if u.Path != got.Path || u.Query().Encode() != got.Query.Encode() {
					t.Errorf("step %d (%s):\n render %s?%s\n sent   %s?%s", i, s.goal, u.Path, u.Query().Encode(), got.Path, got.Query.Encode())
				}
			}
		})
	}
}

// clickParams are the click's params as Redis holds them after reg (its
// first event), for ev: reg's params, overlaid by ev's own.
func clickParams(t *testing.T, reg ev, e event.Event) map[string]string {
	t.Helper()
	out := map[string]string{}
	if ps, ok := reg["params"].(map[string]string); ok {
		for k, v := range ps {
			out[k] = v
		}
	}
	for k, v := range e.Common().Params {
		out[k] = v
	}
	return out
}
