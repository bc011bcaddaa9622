package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/dispatcher"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/internal/service"
	"github.com/postbackd/postbackd/pipeline"
)

const checkConfigUsage = `usage: postbackd check-config --config FILE

Validates the configuration (every problem listed, exit 2) and connects to nothing;
secrets given as env: or file: must be readable, and a proxy named by
HTTP_PROXY or HTTPS_PROXY (or their lower-case spellings) that postbacks
would go through must be one they can go through. Exit 0 when it is valid.

flags:
`

// cmdCheckConfig validates a configuration and connects nothing.
func cmdCheckConfig(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := commandFlags("check-config", checkConfigUsage, stderr)
	cfg, code := loadConfig(fs, args, getenv, stderr)
	if cfg == nil {
		return code
	}
	if err := dispatcher.CheckProxyEnvironment(getenv, cfg.Partners); err != nil {
		fmt.Fprintf(stderr, "invalid environment:\n%v\n", err)
		return 2
	}
	partners := sortedKeys(cfg.Partners)
	merchants := sortedKeys(cfg.Merchants)
	fmt.Fprintf(stdout, "configuration valid: %d partners (%s), %d merchants (%s), group %s, input topics %s\n",
		len(partners), strings.Join(partners, ", "), len(merchants), strings.Join(merchants, ", "), cfg.Kafka.GroupID,
		strings.Join(service.InputTopics(cfg), ", "))
	return 0
}

const renderUsage = `usage: postbackd render --config FILE --event FILE|- [flags]

Prints the exact URL of every postback the event would make (the partner's
token redacted) with its goal, status, amount and partner, without sending
anything or touching Redis or Kafka. The event is JSON as the payment
platform publishes it; its kind (deposit, revenue, registration,
qualification) is recognised from its fields unless --kind says it.

Without Redis, what the click already knows is given by flags: the click's
network (--click-network) and params (--click-param); a qualification's FTD
(--ftd). An event that names its own network is routed there.

flags:
`

// paramFlags collects repeated key=value flags.
type paramFlags map[string]string

func (p paramFlags) String() string { return fmt.Sprint(map[string]string(p)) }

func (p paramFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	p[k] = v
	return nil
}

func cmdRender(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := commandFlags("render", renderUsage, stderr)
	eventPath := fs.String("event", "", "the event: a JSON file, or - for stdin")
	kind := fs.String("kind", "", "deposit, revenue, registration or qualification (default: recognised)")
	clickNetwork := fs.String("click-network", "", "the click's network, as Redis would know it from earlier events")
	clickParams := paramFlags{}
	fs.Var(clickParams, "click-param", "a param the click already has, key=value (repeatable)")
	ftd := fs.String("ftd", "", "a qualification's FTD: EVENT_ID:AMOUNT:CURRENCY")
	cfg, code := loadConfig(fs, args, getenv, stderr)
	if cfg == nil {
		return code
	}
	if *eventPath == "" {
		fmt.Fprintln(stderr, "--event is required (a file, or - for stdin)")
		return 2
	}
	var raw []byte
	var err error
	if *eventPath == "-" {
		raw, err = io.ReadAll(stdin)
	} else {
		raw, err = os.ReadFile(*eventPath)
	}
	if err != nil {
		fmt.Fprintf(stderr, "--event: %v\n", err)
		return 2
	}
	ev, err := decodeAnyKind(event.Kind(*kind), raw)
	if err != nil {
		fmt.Fprintf(stderr, "the event would be dead-lettered: %v\n", err)
		return 1
	}
	env := ev.Common()
	routed := *env
	if ev.EventKind() == event.KindQualification {
		// A status change goes where its FTD went, with the FTD's params
		// (the click's, as given): never by the qualification's own network.
		routed.Network, routed.Params = "", nil
	}
	rt, how, err := previewRoute(cfg, &routed, *clickNetwork, clickParams)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *ftd != "" {
		if rt.FTD, err = parseFTDFlag(*ftd); err != nil {
			fmt.Fprintf(stderr, "--ftd: %v\n", err)
			return 2
		}
	}
	disp, err := dispatcher.New(cfg.Partners, dispatcher.Options{})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	planned, none, err := pipeline.Preview(service.PipelineConfig(cfg), disp, ev, rt, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "event %s: %s of merchant %s, click %s\nroute: %s\n", env.EventID, ev.EventKind(), env.MerchantID, env.ClickID, how)
	if none != "" {
		fmt.Fprintf(stdout, "no postback: %s\n", none)
		return 0
	}
	for _, pl := range planned {
		pb := pl.Postback
		fmt.Fprintln(stdout)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		row := func(k, v string) {
			if v != "" {
				fmt.Fprintf(tw, "  %s\t%s\n", k, v)
			}
		}
		row("goal", string(pb.Goal))
		row("when", pl.When)
		row("partner", pb.Partner)
		row("status", pb.Status)
		if pb.HasAmount {
			row("amount", disp.FormatAmount(pb.Amount, pb.Currency)+" "+pb.Currency)
		}
		row("transaction_id", pb.ID)
		if pl.Skip != "" {
			row("not sent", pl.Skip)
		} else if r, err := disp.Render(pb); err != nil {
			row("error", err.Error())
		} else {
			row("url", r.Redacted)
			for _, w := range r.Warnings {
				row("warning", w)
			}
		}
		_ = tw.Flush()
	}
	return 0
}

// decodeAnyKind decodes raw as kind, or, when kind is empty, as the one
// kind whose schema accepts it (the input schemas reject unknown fields, so
// a valid event fits exactly one).
func decodeAnyKind(kind event.Kind, raw []byte) (event.Event, error) {
	dec, err := event.NewDecoder()
	if err != nil {
		return nil, err
	}
	if kind != "" {
		return dec.Decode(kind, raw)
	}
	var fits []event.Event
	var problems []string
	for _, k := range []event.Kind{event.KindDeposit, event.KindRevenue, event.KindRegistration, event.KindQualification} {
		ev, err := dec.Decode(k, raw)
		if err != nil {
			problems = append(problems, fmt.Sprintf("as a %s: %v", k, err))
			continue
		}
		fits = append(fits, ev)
	}
	switch len(fits) {
	case 1:
		return fits[0], nil
	case 0:
		return nil, fmt.Errorf("it is no valid event of any kind (pass --kind for one kind's problems):\n  %s", strings.Join(problems, "\n  "))
	default:
		return nil, errors.New("it fits more than one kind: pass --kind")
	}
}

// previewRoute routes env as the pipeline would with the click's network
// and params given: the event's own network, the click's, the merchant's
// default.
func previewRoute(cfg *config.Config, env *event.Envelope, clickNetwork string, clickParams map[string]string) (pipeline.PreviewRoute, string, error) {
	merchant, ok := cfg.Merchants[env.MerchantID]
	if !ok {
		return pipeline.PreviewRoute{}, "", fmt.Errorf("merchant %q is not configured: the event would be dead-lettered unknown_merchant", env.MerchantID)
	}
	for _, n := range []string{env.Network, clickNetwork} {
		if _, ok := cfg.Partners[n]; n != "" && !ok {
			return pipeline.PreviewRoute{}, "", fmt.Errorf("network %q is not a configured partner: the event would be dead-lettered unknown_partner", n)
		}
	}
	params := func(partner string) map[string]string {
		out := map[string]string{}
		if clickNetwork == "" || clickNetwork == partner {
			for k, v := range clickParams {
				out[k] = v
			}
		}
		for k, v := range env.Params {
			if v != "" {
				out[k] = v
			}
		}
		return out
	}
	switch {
	case env.Network != "":
		return pipeline.PreviewRoute{Partner: env.Network, Via: dedupe.RouteEvent, Params: params(env.Network)},
			"event (it names network " + env.Network + ")", nil
	case clickNetwork != "":
		return pipeline.PreviewRoute{Partner: clickNetwork, Via: dedupe.RouteClick, Params: params(clickNetwork)},
			"click (--click-network " + clickNetwork + ")", nil
	case merchant.DefaultPartner != "":
		return pipeline.PreviewRoute{Partner: merchant.DefaultPartner, Via: dedupe.RouteDefault, Params: params(merchant.DefaultPartner)},
			"default (merchant " + env.MerchantID + "'s default partner " + merchant.DefaultPartner + "; at run time the click's network wins if earlier events named one)", nil
	}
	return pipeline.PreviewRoute{}, "", fmt.Errorf("no route: the event names no network, --click-network is not given and merchant %s has no default_partner "+
		"(at run time it would wait for its click's network, or be dead-lettered no_route)", env.MerchantID)
}

func parseFTDFlag(s string) (*pipeline.PreviewFTD, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" {
		return nil, fmt.Errorf("%q: want EVENT_ID:AMOUNT:CURRENCY", s)
	}
	amount, err := decimal.NewFromString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("amount %q: %w", parts[1], err)
	}
	if _, ok := event.MinorUnits(parts[2]); !ok {
		return nil, fmt.Errorf("currency %q is not an ISO 4217 code", parts[2])
	}
	return &pipeline.PreviewFTD{EventID: parts[0], Amount: amount, Currency: parts[2]}, nil
}
