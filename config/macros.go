package config

import (
	"strings"

	"github.com/postbackd/postbackd/internal/urltemplate"
)

// Macro documents one placeholder a goal URL template may use.
type Macro struct {
	Name    string // as written between braces; "param.<name>" and "tr.<field>" are families
	Meaning string
}

// Macros lists every placeholder a goal URL may use, in documentation order.
// The renderer (dispatcher) must give each of them a value; KnownMacro is the
// matching predicate for urltemplate.Parse. A macro whose value is missing
// for a given postback renders as the empty string.
var Macros = []Macro{
	{"click_id", "the click the conversion belongs to"},
	{"amount", "decimal amount of the deposit or revshare (revshare already multiplied by the merchant's revshare_percent); empty for reg and trial"},
	{"currency", "ISO 4217 code of the amount (for ftd_status: the FTD deposit's currency)"},
	{"token", "the partner's secret token (redacted in every log, audit record and DLQ record)"},
	{"goal", "internal goal name: reg, trial, ftd, ftd_status, rdep, revshare"},
	{"goal_alias", "the partner's name of the goal (goals.<goal>.alias)"},
	{"conv_status", "the partner's word (status_words) for the postback's status: pending for ftd, approved or rejected for ftd_status"},
	{"transaction_id", "the postback's stable id, so a partner can drop a duplicate"},
	{"event_id", "id of the source event"},
	{"player_id", "the player, when the event carries one"},
	{"offer_id", "the offer, from the click's params (params key offer_id)"},
	{"merchant_id", "the merchant the event belongs to"},
	{"timestamp", "unix seconds of the event's occurred_at"},
	{"param.<name>", "the click's custom field <name> (registration params overlaid by the event's own)"},
	{"tr.<field>", "field <field> decoded from the partner's tracker string (tracker_string.pattern)"},
}

// Macro name families.
const (
	paramMacroPrefix   = "param."
	trackerMacroPrefix = "tr."
)

// KnownMacro returns the predicate urltemplate.Parse needs for partner's goal
// URLs: every fixed name of Macros, "param.<name>" for any non-empty name, and
// "tr.<field>" for exactly the fields of partner's tracker pattern (none when
// the pattern is unset or does not parse).
func KnownMacro(partner Partner) func(string) bool {
	fields := make(map[string]bool)
	for _, f := range partner.TrackerString.Fields() {
		fields[f] = true
	}
	return func(name string) bool {
		switch {
		case strings.HasPrefix(name, paramMacroPrefix):
			return len(name) > len(paramMacroPrefix)
		case strings.HasPrefix(name, trackerMacroPrefix):
			return fields[name[len(trackerMacroPrefix):]]
		}
		for _, m := range Macros {
			if m.Name == name && !strings.Contains(name, "<") {
				return true
			}
		}
		return false
	}
}

// Fields returns the field names of the tracker pattern, in order, or nil
// when the pattern is unset or does not parse (Validate reports why).
func (t TrackerString) Fields() []string {
	if t.Pattern == "" {
		return nil
	}
	tpl, err := urltemplate.Parse(t.Pattern, isIdentifier)
	if err != nil {
		return nil
	}
	return tpl.Macros()
}

// isIdentifier accepts tracker field names: a letter or '_' then letters,
// digits or '_'.
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && r >= '0' && r <= '9':
		default:
			return false
		}
	}
	return true
}
