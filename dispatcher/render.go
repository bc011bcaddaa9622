package dispatcher

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/bojanz/currency"
	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/postback"
)

// redacted replaces the partner's token wherever it appears in a URL.
const redacted = "[REDACTED]"

// Rendered is one postback's URL.
type Rendered struct {
	// URL is what is sent. It contains the partner's token: never log,
	// audit or store it.
	URL string
	// Redacted is URL with the token (raw, query-escaped and path-escaped)
	// replaced by [REDACTED]; safe for logs, audit and the DLQ.
	Redacted string
	// Warnings are problems that did not stop rendering, e.g. a tracker
	// string that does not match the partner's pattern (tr.* then render
	// empty). They never contain the token.
	Warnings []string

	// target is URL as every attempt requests it: parsed once, the host with
	// an empty port cut to the host, the fragment dropped (never sent).
	target string
}

// Render fills the goal's URL template of p's partner. Macros (values are
// URL-escaped: path escaping before '?', query escaping after):
//
//	click_id        p.ClickID
//	amount          FormatAmount(p.Amount, p.Currency); empty if !p.HasAmount
//	currency        p.Currency
//	token           the partner's token (redacted in Rendered.Redacted)
//	goal            the internal goal (reg, trial, ftd, ftd_status, rdep, revshare)
//	goal_alias      the partner's alias of the goal (default: the goal)
//	conv_status     the partner's word for p.Status (default: p.Status)
//	transaction_id  p.ID, the stable postback id (partners drop duplicates on it)
//	event_id        p.EventID
//	player_id       p.PlayerID
//	offer_id        p.Params["offer_id"]
//	merchant_id     p.Merchant
//	timestamp       unix seconds of p.OccurredAt (the source event's time); empty if zero
//	param.<name>    p.Params[name]
//	tr.<field>      a field of the partner's tracker string (see TrackerPattern)
//
// Errors (all permanent): ErrUnknownPartner, ErrGoalNotConfigured,
// ErrHostNotAllowed.
func (d *Dispatcher) Render(pb postback.Postback) (Rendered, error) {
	p, ok := d.partners[pb.Partner]
	if !ok {
		return Rendered{}, fmt.Errorf("partner %q: %w", pb.Partner, ErrUnknownPartner)
	}
	return p.render(pb)
}

func (p *partner) render(pb postback.Postback) (Rendered, error) {
	gt, ok := p.goals[pb.Goal]
	if !ok {
		return Rendered{}, fmt.Errorf("partner %q goal %q: %w", p.name, pb.Goal, ErrGoalNotConfigured)
	}
	var r Rendered
	var tr map[string]string
	if p.tracker != nil {
		raw, ok := pb.Params[p.cfg.TrackerString.Param]
		var err error
		switch {
		case !ok:
			err = fmt.Errorf("param %q missing", p.cfg.TrackerString.Param)
		default:
			tr, err = p.tracker.Decode(raw)
		}
		if err != nil && gt.usesTracker {
			r.Warnings = append(r.Warnings, p.redactString("tracker string: "+err.Error()))
		}
	}
	r.URL = gt.tmpl.Render(func(name string) string {
		switch name {
		case "click_id":
			return pb.ClickID
		case "amount":
			if !pb.HasAmount {
				return ""
			}
			return FormatAmount(pb.Amount, pb.Currency)
		case "currency":
			return pb.Currency
		case "token":
			return p.token
		case "goal":
			return string(pb.Goal)
		case "goal_alias":
			return gt.alias
		case "conv_status":
			if w, ok := p.cfg.StatusWords[pb.Status]; ok {
				return w
			}
			return pb.Status
		case "transaction_id":
			return pb.ID
		case "event_id":
			return pb.EventID
		case "player_id":
			return pb.PlayerID
		case "offer_id":
			return pb.Params["offer_id"]
		case "merchant_id":
			return pb.Merchant
		case "timestamp":
			if pb.OccurredAt.IsZero() {
				return ""
			}
			return strconv.FormatInt(pb.OccurredAt.Unix(), 10)
		}
		if n, ok := strings.CutPrefix(name, "param."); ok {
			return pb.Params[n]
		}
		if n, ok := strings.CutPrefix(name, "tr."); ok {
			return tr[n]
		}
		return "" // unreachable: Parse accepted only known macros
	})
	r.Redacted = p.redactString(r.URL)

	u, err := url.Parse(r.URL)
	if err != nil {
		// Cannot happen with a template whose scheme and host are literal and
		// escaped values, but a bad URL must never be sent.
		return Rendered{}, fmt.Errorf("partner %q goal %q: rendered URL %q: %w", p.name, pb.Goal, r.Redacted, errors.Unwrap(err))
	}
	if !p.hostAllowed(u.Hostname(), u.Port()) {
		return Rendered{Redacted: r.Redacted, Warnings: r.Warnings},
			fmt.Errorf("partner %q goal %q: %w: %q", p.name, pb.Goal, ErrHostNotAllowed, p.redactString(u.Host))
	}
	// As http.NewRequest does: "host:" is the host with its default port.
	r.target = u.Scheme + "://" + strings.TrimSuffix(u.Host, ":") + u.RequestURI()
	return r, nil
}

// newRedactor replaces every form in which a token can appear in a URL: as
// is, query-escaped and path-escaped. Longer forms come first so that a form
// containing another is replaced whole. nil when there is no token.
func newRedactor(token string) *strings.Replacer {
	if token == "" {
		return nil
	}
	forms := []string{url.QueryEscape(token), url.PathEscape(token), token}
	sort.SliceStable(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	var pairs []string
	seen := map[string]bool{}
	for _, f := range forms {
		if !seen[f] {
			seen[f] = true
			pairs = append(pairs, f, redacted)
		}
	}
	return strings.NewReplacer(pairs...)
}

func (p *partner) redactString(s string) string {
	if p.redact == nil {
		return s
	}
	return p.redact.Replace(s)
}

// FormatAmount formats amount with a dot and exactly the currency's minor
// units (ISO 4217 via bojanz/currency: JPY 0, USD 2, KWD 3; an unknown or
// empty currency gets 2). Extra digits are rounded half away from zero
// ("commercial" rounding: KWD 1.2345 → "1.235", USD -0.005 → "-0.01"),
// which is what payment reports and partners' own sums use. Inputs normally
// already have at most the currency's digits, so rounding is rare.
func FormatAmount(amount decimal.Decimal, currencyCode string) string {
	digits, ok := currency.GetDigits(currencyCode)
	if !ok {
		digits = 2
	}
	return amount.StringFixed(int32(digits))
}

// FormatAmount is the package function FormatAmount, for callers holding a
// Dispatcher.
func (d *Dispatcher) FormatAmount(amount decimal.Decimal, currencyCode string) string {
	return FormatAmount(amount, currencyCode)
}
