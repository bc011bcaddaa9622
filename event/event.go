// Package event holds the domain types of postbackd's input events and decodes
// them from Kafka message values.
//
// The JSON Schemas in schemas/ are the source of truth: Decode validates every
// message against the schema of its kind before it builds a typed value, then
// checks what a schema cannot (ISO 4217 currency codes, decimal money).
package event

import (
	"time"

	"github.com/shopspring/decimal"
)

// Kind names an input stream. Each kind has its own schema and its own topic
// (configurable); the consumer maps topic to kind.
type Kind string

const (
	KindDeposit       Kind = "deposit"
	KindRevenue       Kind = "revenue"
	KindRegistration  Kind = "registration"
	KindQualification Kind = "qualification"
)

// Kinds lists every input kind in a stable order.
var Kinds = []Kind{KindDeposit, KindRevenue, KindRegistration, KindQualification}

// Envelope is what every input event carries.
type Envelope struct {
	EventID    string            `json:"event_id"`
	OccurredAt time.Time         `json:"occurred_at"`
	MerchantID string            `json:"merchant_id"`
	ClickID    string            `json:"click_id"`
	Network    string            `json:"network,omitempty"` // partner; empty = merchant's default or the click's
	Params     map[string]string `json:"params,omitempty"`  // custom fields, raw tracker string, offer id
}

// DepositStatus is the payment outcome of a deposit.
type DepositStatus string

const (
	DepositSucceeded DepositStatus = "succeeded"
	DepositFailed    DepositStatus = "failed"
	DepositPending   DepositStatus = "pending"
)

// Deposit is a payment attempt of a player. Only succeeded deposits count.
type Deposit struct {
	Envelope
	Amount        decimal.Decimal `json:"amount"`
	Currency      string          `json:"currency"` // ISO 4217, upper case
	Status        DepositStatus   `json:"status"`
	PlayerID      string          `json:"player_id"`
	PaymentMethod string          `json:"payment_method,omitempty"`
}

// Revenue is a revenue figure of a player (may be zero or negative).
type Revenue struct {
	Envelope
	Amount   decimal.Decimal `json:"amount"`
	Currency string          `json:"currency"`
	PlayerID string          `json:"player_id,omitempty"`
}

// RegistrationKind tells a full registration from a trial.
type RegistrationKind string

const (
	RegistrationFull  RegistrationKind = "registration"
	RegistrationTrial RegistrationKind = "trial"
)

// Registration is a player signing up (or starting a trial) from a click.
type Registration struct {
	Envelope
	Kind     RegistrationKind `json:"kind"`
	PlayerID string           `json:"player_id,omitempty"`
}

// QualificationStatus is the merchant's verdict on a first deposit.
type QualificationStatus string

const (
	QualificationApproved QualificationStatus = "approved"
	QualificationRejected QualificationStatus = "rejected"
)

// Qualification approves or rejects the FTD of a click.
type Qualification struct {
	Envelope
	Status QualificationStatus `json:"status"`
	Reason string              `json:"reason,omitempty"`
}

// Event is one of *Deposit, *Revenue, *Registration, *Qualification.
type Event interface {
	EventKind() Kind
	Common() *Envelope
}

func (*Deposit) EventKind() Kind       { return KindDeposit }
func (*Revenue) EventKind() Kind       { return KindRevenue }
func (*Registration) EventKind() Kind  { return KindRegistration }
func (*Qualification) EventKind() Kind { return KindQualification }

func (e *Deposit) Common() *Envelope       { return &e.Envelope }
func (e *Revenue) Common() *Envelope       { return &e.Envelope }
func (e *Registration) Common() *Envelope  { return &e.Envelope }
func (e *Qualification) Common() *Envelope { return &e.Envelope }

// Source locates a Kafka message: where an event, and so every outcome
// derived from it, came from. Carried into audit and DLQ records so a record
// can be traced and replayed.
type Source struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
}
