package event

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bojanz/currency"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/schemas"
)

// Machine-readable reasons of an *InvalidError, written to DLQ records.
const (
	ReasonUndecodable = "undecodable"      // empty (tombstone), not JSON, or not a JSON object
	ReasonSchema      = "schema_invalid"   // fails the kind's JSON Schema
	ReasonCurrency    = "unknown_currency" // well-formed but not an ISO 4217 code
	ReasonAmount      = "invalid_amount"   // e.g. a succeeded deposit of zero, too many fractional digits
)

// MaxAmountScale is the most fractional digits an amount may have. Partners
// take at most a handful; anything beyond this is a producer bug, not money.
const MaxAmountScale = 18

// ErrUnknownKind is returned by Decode for a Kind not in Kinds: a caller bug,
// not bad input, so it is not an *InvalidError.
var ErrUnknownKind = errors.New("unknown event kind")

// maxDetailLen bounds InvalidError.Detail, which ends up in DLQ records.
const maxDetailLen = 512

// InvalidError is an input event that can never be processed: retrying it
// cannot help, it belongs in the DLQ.
type InvalidError struct {
	Reason string // one of the Reason constants
	Detail string // one line, bounded, names the failing field's JSON pointer when there is one
	// EventID and ClickID are read from the message when it is a JSON object
	// holding them as strings of sane length, so a DLQ record can name them
	// even if another field is what failed. Empty otherwise.
	EventID string
	ClickID string
}

func (e *InvalidError) Error() string { return e.Reason + ": " + e.Detail }

// Decoder decodes input events. It holds the compiled schemas and is safe
// for concurrent use.
type Decoder struct {
	set *schemas.Set
	// fast holds, per kind, the rules of its schema that decodeFast checks;
	// nil for a kind whose schema uses something decodeFast does not
	// implement, so that decodeFast declines every message of it.
	fast map[Kind]*fastSchema
}

// NewDecoder compiles the schemas once.
func NewDecoder() (*Decoder, error) {
	set, err := schemas.Compile()
	if err != nil {
		return nil, fmt.Errorf("compile event schemas: %w", err)
	}
	d := &Decoder{set: set, fast: make(map[Kind]*fastSchema, len(Kinds))}
	for _, kind := range Kinds {
		// An error only leaves the kind to decodeSlow, which is correct on
		// its own; TestFastSchemasCompile insists there is none.
		if sch, err := fastSchemaOf(kind); err == nil {
			d.fast[kind] = sch
		}
	}
	return d, nil
}

// Decode parses value (one Kafka message value) as an event of kind,
// validates it against the kind's schema, and returns the typed event:
// *Deposit, *Revenue, *Registration or *Qualification. Money is parsed from
// its decimal string, never through a float.
//
// Every input problem is an *InvalidError; the only other error is
// ErrUnknownKind. The caller bounds the size of value.
func (d *Decoder) Decode(kind Kind, value []byte) (Event, error) {
	if !kind.valid() {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKind, kind)
	}
	if e, ok := d.decodeFast(kind, value); ok {
		return e, nil
	}
	return d.decodeSlow(kind, value)
}

// decodeSlow is Decode for a valid kind by the general path: any JSON, the
// schema library, and the authoritative error for every invalid message.
func (d *Decoder) decodeSlow(kind Kind, value []byte) (Event, error) {
	if len(bytes.TrimSpace(value)) == 0 {
		return nil, &InvalidError{Reason: ReasonUndecodable, Detail: "empty message value (tombstone)"}
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err != nil {
		return nil, &InvalidError{Reason: ReasonUndecodable, Detail: bounded("not JSON: " + err.Error())}
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, &InvalidError{Reason: ReasonUndecodable, Detail: "not a JSON object: got " + jsonType(doc)}
	}
	if err := d.set.Validate(string(kind), obj); err != nil {
		return nil, invalid(obj, ReasonSchema, err.Error())
	}

	// From here the schema guarantees every present field has its type, so
	// the type assertions cannot fail.
	var f fields
	for name, field := range fieldNamed {
		f.strs[field] = str(obj, name)
	}
	if raw, ok := obj["params"].(map[string]any); ok {
		f.params = make(map[string]string, len(raw))
		for k, v := range raw {
			f.params[k], _ = v.(string)
		}
	}
	e, rej := f.event(kind)
	if rej != nil {
		return nil, invalid(obj, rej.reason, rej.detail)
	}
	return e, nil
}

// field names a string property of the input events.
type field int

const (
	fieldEventID field = iota
	fieldOccurredAt
	fieldMerchantID
	fieldClickID
	fieldNetwork
	fieldAmount
	fieldCurrency
	fieldStatus
	fieldPlayerID
	fieldPaymentMethod
	fieldKind
	fieldReason
	numFields
)

// fieldNamed maps a property name of the schemas to its field.
var fieldNamed = map[string]field{
	"event_id":       fieldEventID,
	"occurred_at":    fieldOccurredAt,
	"merchant_id":    fieldMerchantID,
	"click_id":       fieldClickID,
	"network":        fieldNetwork,
	"amount":         fieldAmount,
	"currency":       fieldCurrency,
	"status":         fieldStatus,
	"player_id":      fieldPlayerID,
	"payment_method": fieldPaymentMethod,
	"kind":           fieldKind,
	"reason":         fieldReason,
}

// fields is a message that passed its kind's schema, as both decode paths
// hand it to event.
type fields struct {
	strs   [numFields]string // "" when absent
	params map[string]string // nil or empty when absent
}

// rejection is a check failing that a schema cannot express.
type rejection struct {
	reason string // one of the Reason constants
	detail string
}

// event builds the typed event of kind from fields that passed the kind's
// schema and checks what the schema cannot: that occurred_at is a time Go
// represents, the currency is ISO 4217, the amount a decimal of bounded
// scale, and a succeeded deposit more than zero. Both decode paths end here,
// so these rules live in one place.
func (f *fields) event(kind Kind) (Event, *rejection) {
	// The schema checked the RFC 3339 shape; time.Parse still refuses what Go
	// cannot represent, such as a leap second.
	at, err := time.Parse(time.RFC3339Nano, f.strs[fieldOccurredAt])
	if err != nil {
		return nil, &rejection{ReasonSchema, "/occurred_at: not a valid date-time: " + err.Error()}
	}
	env := Envelope{
		EventID:    f.strs[fieldEventID],
		OccurredAt: at,
		MerchantID: f.strs[fieldMerchantID],
		ClickID:    f.strs[fieldClickID],
		Network:    f.strs[fieldNetwork],
	}
	if len(f.params) > 0 {
		env.Params = f.params
	}
	switch kind {
	case KindDeposit:
		e := &Deposit{
			Envelope:      env,
			Currency:      f.strs[fieldCurrency],
			Status:        DepositStatus(f.strs[fieldStatus]),
			PlayerID:      f.strs[fieldPlayerID],
			PaymentMethod: f.strs[fieldPaymentMethod],
		}
		if !currency.IsValid(e.Currency) {
			return nil, &rejection{ReasonCurrency, unknownCurrency(e.Currency)}
		}
		if e.Amount, err = money(f.strs[fieldAmount]); err != nil {
			return nil, &rejection{ReasonAmount, err.Error()}
		}
		if e.Status == DepositSucceeded && e.Amount.Sign() <= 0 {
			return nil, &rejection{ReasonAmount, "/amount: a succeeded deposit must be greater than zero, got " + e.Amount.String()}
		}
		return e, nil
	case KindRevenue:
		e := &Revenue{
			Envelope: env,
			Currency: f.strs[fieldCurrency],
			PlayerID: f.strs[fieldPlayerID],
		}
		if !currency.IsValid(e.Currency) {
			return nil, &rejection{ReasonCurrency, unknownCurrency(e.Currency)}
		}
		if e.Amount, err = money(f.strs[fieldAmount]); err != nil {
			return nil, &rejection{ReasonAmount, err.Error()}
		}
		return e, nil
	case KindRegistration:
		return &Registration{
			Envelope: env,
			Kind:     RegistrationKind(f.strs[fieldKind]),
			PlayerID: f.strs[fieldPlayerID],
		}, nil
	default: // KindQualification: Decode's kind.valid() left nothing else.
		return &Qualification{
			Envelope: env,
			Status:   QualificationStatus(f.strs[fieldStatus]),
			Reason:   f.strs[fieldReason],
		}, nil
	}
}

// MinorUnits returns the number of fractional digits of an ISO 4217
// currency (2 for EUR, 0 for JPY, 3 for KWD), and false for an unknown code.
func MinorUnits(code string) (int, bool) {
	d, ok := currency.GetDigits(code)
	return int(d), ok
}

func (k Kind) valid() bool {
	switch k {
	case KindDeposit, KindRevenue, KindRegistration, KindQualification:
		return true
	}
	return false
}

// money parses the amount's decimal string exactly and bounds its scale.
func money(s string) (decimal.Decimal, error) {
	if i := strings.IndexByte(s, '.'); i >= 0 && len(s)-i-1 > MaxAmountScale {
		return decimal.Decimal{}, fmt.Errorf("/amount: %d fractional digits exceed the maximum %d", len(s)-i-1, MaxAmountScale)
	}
	amount, err := decimal.NewFromString(s)
	if err != nil {
		return decimal.Decimal{}, fmt.Errorf("/amount: not a decimal: %w", err)
	}
	return amount, nil
}

func unknownCurrency(code string) string {
	return fmt.Sprintf("/currency: %q is not an ISO 4217 currency code", code)
}

// str returns obj[key] if it is a string, else "".
func str(obj map[string]any, key string) string {
	s, _ := obj[key].(string)
	return s
}

// invalid builds an *InvalidError, naming the event and click when the
// message holds them in a usable form.
func invalid(obj map[string]any, reason, detail string) *InvalidError {
	e := &InvalidError{Reason: reason, Detail: bounded(detail)}
	if s := str(obj, "event_id"); len(s) <= 128 {
		e.EventID = s
	}
	if s := str(obj, "click_id"); len(s) <= 256 {
		e.ClickID = s
	}
	return e
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	default:
		return "number"
	}
}

// bounded keeps a detail to one line of at most maxDetailLen bytes: control
// characters (a JSON syntax error can quote one) are escaped.
func bounded(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) || r == utf8.RuneError }) >= 0 {
		q := strconv.QuoteToGraphic(s)
		s = q[1 : len(q)-1]
	}
	if len(s) <= maxDetailLen {
		return s
	}
	cut := maxDetailLen - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
