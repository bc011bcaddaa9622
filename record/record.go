// Package record defines the records postbackd writes to its output topics:
// the audit trail (postbacks.dispatched), confirmations
// (conversions.confirmed) and dead letters (postbacks.dlq).
//
// These are contracts with analysts and operators: each has a JSON Schema in
// schemas/ and a SchemaVersion. Fields are only ever added; a breaking change
// bumps the version.
package record

import (
	"time"

	"github.com/postbackd/postbackd/event"
)

// SchemaVersion is the version of every output record defined here.
const SchemaVersion = 1

// MaxDeadLetterValue caps DeadLetter.Value (64 KiB). JSON escaping can grow
// it up to six times, which still fits Kafka's default 1 MB message size.
const MaxDeadLetterValue = 64 << 10

// Outcome is what became of a postback (or of an event that makes none).
type Outcome string

const (
	// OutcomeDelivered: the partner accepted the postback.
	OutcomeDelivered Outcome = "delivered"
	// OutcomeFailed: this attempt failed and the postback was handed to the
	// delayed retry path (NextAttemptAt says when).
	OutcomeFailed Outcome = "failed"
	// OutcomeSkipped: nothing was sent, on purpose (failed deposit, CPA
	// merchant's revenue, zero revshare, already delivered, conflicting
	// qualification, goal not configured for the partner). Reason says why.
	OutcomeSkipped Outcome = "skipped"
	// OutcomeDeadLettered: given up (invalid event, permanent refusal,
	// maximum age, orphan qualification); a DLQ record holds the details.
	OutcomeDeadLettered Outcome = "dead_lettered"
)

// Audit is one record of postbacks.dispatched, keyed by click_id. Consumers
// should treat PostbackID (or EventID plus Reason when PostbackID is empty)
// as the idempotency key: after a crash between the audit write and the
// offset commit, a record can appear twice with the same content.
type Audit struct {
	SchemaVersion int          `json:"schema_version"`
	PostbackID    string       `json:"postback_id,omitempty"`
	EventID       string       `json:"event_id"`
	EventKind     event.Kind   `json:"event_kind"`
	Source        event.Source `json:"source"`
	MerchantID    string       `json:"merchant_id,omitempty"`
	ClickID       string       `json:"click_id,omitempty"`
	Network       string       `json:"network,omitempty"`
	// Route says how Network was chosen: event, click, conversion, default.
	Route string `json:"route,omitempty"`
	// ClickNetwork is the click's own partner when the event named another.
	ClickNetwork string `json:"click_network,omitempty"`
	Goal         string `json:"goal,omitempty"`
	Status       string `json:"status,omitempty"`
	Amount       string `json:"amount,omitempty"` // decimal string as sent
	Currency     string `json:"currency,omitempty"`
	// URL is the rendered postback URL with every secret replaced by
	// "[REDACTED]".
	URL string `json:"url,omitempty"`
	// Params are the affiliate's own fields the URL was rendered with (the
	// click's params overlaid by the event's own), so that an analyst, and
	// rebuild-state, can read them without parsing URLs.
	Params        map[string]string `json:"params,omitempty"`
	Outcome       Outcome           `json:"outcome"`
	Reason        string            `json:"reason,omitempty"` // machine-readable, e.g. "deposit_not_succeeded"
	HTTPStatus    int               `json:"http_status,omitempty"`
	Attempts      int               `json:"attempts"`
	Error         string            `json:"error,omitempty"`
	Replayed      bool              `json:"replayed,omitempty"` // re-emitted for an already delivered postback after redelivery
	OccurredAt    *time.Time        `json:"occurred_at,omitempty"`
	FirstAttempt  *time.Time        `json:"first_attempt_at,omitempty"`
	LastAttempt   *time.Time        `json:"last_attempt_at,omitempty"`
	LatencyMillis int64             `json:"latency_ms,omitempty"` // last attempt's HTTP round trip
	NextAttemptAt *time.Time        `json:"next_attempt_at,omitempty"`
	RecordedAt    time.Time         `json:"recorded_at"`
}

// Confirmation is one record of conversions.confirmed, keyed by click_id:
// emitted once the FTD status change was delivered to the partner.
type Confirmation struct {
	SchemaVersion        int       `json:"schema_version"`
	ClickID              string    `json:"click_id"`
	MerchantID           string    `json:"merchant_id"`
	Network              string    `json:"network"`
	Status               string    `json:"status"` // approved or rejected
	FTDEventID           string    `json:"ftd_event_id"`
	QualificationEventID string    `json:"qualification_event_id"`
	Amount               string    `json:"amount"`
	Currency             string    `json:"currency"`
	PostbackID           string    `json:"postback_id"`
	ConfirmedAt          time.Time `json:"confirmed_at"`
	// Replayed is set when the record is re-emitted for a status change that
	// was already delivered (a redelivered event, or a crash before the first
	// write): confirmations are at-least-once, keyed by PostbackID.
	Replayed bool `json:"replayed,omitempty"`
}

// DeadLetter is one record of postbacks.dlq, keyed by click_id when known.
// It carries enough to replay: the raw source message for invalid input, or
// the postback for one given up on.
type DeadLetter struct {
	SchemaVersion int          `json:"schema_version"`
	Reason        string       `json:"reason"` // machine-readable, e.g. "schema_invalid"
	Error         string       `json:"error"`  // human-readable detail, secrets redacted
	Source        event.Source `json:"source"`
	EventID       string       `json:"event_id,omitempty"`
	EventKind     event.Kind   `json:"event_kind,omitempty"`
	ClickID       string       `json:"click_id,omitempty"`
	// Key and Value are the source message as received, for invalid input.
	Key   string `json:"key,omitempty"`
	Value string `json:"value,omitempty"`
	// ValueTruncated says Value holds only the first MaxDeadLetterValue
	// bytes: a dead letter must fit the DLQ topic's message size, or the
	// partition it came from would stall retrying the write.
	ValueTruncated bool `json:"value_truncated,omitempty"`
	ValueSize      int  `json:"value_size,omitempty"`
	// Postback is the postback given up on (values only, no secret).
	Postback   any       `json:"postback,omitempty"`
	Attempts   int       `json:"attempts,omitempty"`
	RecordedAt time.Time `json:"recorded_at"`
}
