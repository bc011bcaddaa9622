// Package postback holds the central domain type of postbackd: one
// server-to-server notification owed to a partner network, and its stable id.
package postback

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/event"
)

// Goal is postbackd's internal name of a conversion. Each partner maps goals
// to its own alias, URL and status words.
type Goal string

const (
	GoalReg       Goal = "reg"        // registration
	GoalTrial     Goal = "trial"      // trial / free registration
	GoalFTD       Goal = "ftd"        // first successful deposit, sent as pending
	GoalFTDStatus Goal = "ftd_status" // approval or rejection of the FTD
	GoalRD        Goal = "rdep"       // every successful deposit after the FTD
	GoalRevshare  Goal = "revshare"   // revenue share, hybrid deals only
)

// Goals lists every goal in a stable order.
var Goals = []Goal{GoalReg, GoalTrial, GoalFTD, GoalFTDStatus, GoalRD, GoalRevshare}

// Valid reports whether g is one of Goals.
func (g Goal) Valid() bool {
	for _, k := range Goals {
		if g == k {
			return true
		}
	}
	return false
}

// Internal conversion statuses; partners map them to their own words.
const (
	StatusPending  = "pending"
	StatusApproved = "approved"
	StatusRejected = "rejected"
)

// Postback is one notification owed to a partner. It holds values, not the
// rendered URL: the URL (with the partner's token) is rendered at each send,
// so a postback can be stored for a delayed retry without storing a secret.
type Postback struct {
	// ID is stable across redeliveries and retries (see NewID). It is the
	// idempotency key of the send and is passed to partners as transaction_id.
	ID      string `json:"id"`
	Partner string `json:"partner"`
	// Route says how Partner was chosen: event, click, conversion or
	// default (see dedupe.RouteVia).
	Route string `json:"route,omitempty"`
	// ClickNetwork is the click's own partner when the event named another
	// one (Route "event"): that event alone went elsewhere.
	ClickNetwork string `json:"click_network,omitempty"`
	Goal         Goal   `json:"goal"`
	Status       string `json:"status,omitempty"` // StatusPending for ftd, approved/rejected for ftd_status
	Merchant     string `json:"merchant_id"`
	ClickID      string `json:"click_id"`
	// EventID is the source event. For ftd_status it is the qualification
	// event; FTDEventID then names the deposit whose status changes.
	EventID    string `json:"event_id"`
	FTDEventID string `json:"ftd_event_id,omitempty"`
	PlayerID   string `json:"player_id,omitempty"`

	HasAmount bool            `json:"has_amount"`
	Amount    decimal.Decimal `json:"amount"`
	Currency  string          `json:"currency,omitempty"`

	// Params are the click's custom fields (registration's params overlaid by
	// the event's own), including the raw tracker string and offer_id.
	Params map[string]string `json:"params,omitempty"`

	Source event.Source `json:"source"`
	// OccurredAt is when the source event happened (the {timestamp} macro).
	OccurredAt time.Time `json:"occurred_at"`
	// CreatedAt is when postbackd first tried to send it; a partner's maximum
	// age counts from here.
	CreatedAt time.Time `json:"created_at"`
	// Attempts counts HTTP attempts already made (across delayed retries).
	Attempts int `json:"attempts"`
}

// NewID derives the stable postback id from what makes a postback unique:
// the partner, the goal, the source event and the status. The same inputs
// always give the same id, so a redelivered event maps onto the same claim.
func NewID(partner string, goal Goal, sourceEventID, status string) string {
	h := sha256.New()
	for _, s := range []string{partner, string(goal), sourceEventID, status} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
