// Package config loads postbackd's configuration from YAML plus environment
// overrides, fills defaults, and validates it before anything connects.
//
// Secrets (partner tokens, Kafka SASL and Redis passwords) are never written
// inline: the YAML names an environment variable or a file, and Load resolves
// them into SecretRef.Value, which is redacted whenever printed.
package config

import (
	"fmt"
	"io"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/postback"
)

// Config is the whole configuration of one postbackd process.
type Config struct {
	Kafka         Kafka               `yaml:"kafka"`
	Redis         Redis               `yaml:"redis"`
	Topics        Topics              `yaml:"topics"`
	Consumer      Consumer            `yaml:"consumer"`
	Delayed       Delayed             `yaml:"delayed"`
	Qualification Qualification       `yaml:"qualification"`
	Admin         Admin               `yaml:"admin"`
	Log           Log                 `yaml:"log"`
	Partners      map[string]Partner  `yaml:"partners"`
	Merchants     map[string]Merchant `yaml:"merchants"`
}

// Kafka is how to reach the brokers and which consumer group to join.
type Kafka struct {
	Brokers  []string `yaml:"brokers"`
	GroupID  string   `yaml:"group_id"`  // default "postbackd"
	ClientID string   `yaml:"client_id"` // default "postbackd"
	TLS      TLS      `yaml:"tls"`
	SASL     SASL     `yaml:"sasl"`
}

// SASL authenticates to Kafka. Mechanism "" disables it.
type SASL struct {
	Mechanism string    `yaml:"mechanism"` // "", "plain", "scram-sha-256", "scram-sha-512"
	Username  string    `yaml:"username"`
	Password  SecretRef `yaml:"password"`
}

// TLS configures a client TLS connection.
type TLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Redis is how to reach Redis: one address for a single node, several with
// Cluster for a Redis Cluster.
type Redis struct {
	Addrs    []string  `yaml:"addrs"`
	Cluster  bool      `yaml:"cluster"`
	Username string    `yaml:"username"`
	Password SecretRef `yaml:"password"`
	DB       int       `yaml:"db"`
	TLS      TLS       `yaml:"tls"`
	PoolSize int       `yaml:"pool_size"` // default 128
	// KeyPrefix namespaces every key (default "pb"); change it to run two
	// deployments on one Redis.
	KeyPrefix string `yaml:"key_prefix"`
	// RecordTTL is how long classification answers, claims and click
	// contexts are kept (default 2160h = 90 days). FTD records never expire.
	RecordTTL time.Duration `yaml:"record_ttl"`
	// AllowEviction lets postbackd start on a Redis whose maxmemory-policy
	// can evict keys (anything but noeviction). Evicted FTD records and
	// delivered marks mean second FTDs and second sends: start-up refuses
	// such a Redis unless this is set, and then logs an error.
	AllowEviction bool `yaml:"allow_eviction"`
}

// Topics names every topic postbackd reads or writes.
type Topics struct {
	Deposits       string `yaml:"deposits"`       // default payments.deposits
	Revenue        string `yaml:"revenue"`        // default payments.revenue
	Registrations  string `yaml:"registrations"`  // default players.registrations
	Qualifications string `yaml:"qualifications"` // default players.qualifications
	Dispatched     string `yaml:"dispatched"`     // default postbacks.dispatched (audit)
	Confirmed      string `yaml:"confirmed"`      // default conversions.confirmed
	DLQ            string `yaml:"dlq"`            // default postbacks.dlq
}

// Consumer tunes consumption.
type Consumer struct {
	// MaxInFlight bounds events fetched but not finished, across partitions
	// (default 1024): the backpressure that keeps memory bounded.
	MaxInFlight int `yaml:"max_in_flight"`
	// CommitInterval is how often finished prefixes are committed (default 200ms).
	CommitInterval time.Duration `yaml:"commit_interval"`
	// DrainTimeout bounds how long a stop or a rebalance waits for in-flight
	// events before cancelling them (default 30s). An HTTP attempt already
	// sent still runs to its answer or its timeout (CancelGrace); what is
	// unfinished after that is redelivered.
	DrainTimeout     time.Duration `yaml:"drain_timeout"`
	SessionTimeout   time.Duration `yaml:"session_timeout"`   // default 10s
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"` // default 45s
	// StartOffset for a group with no committed offset: "earliest" (default) or "latest".
	StartOffset string `yaml:"start_offset"`
}

// Delayed configures the delayed retry path (a Redis schedule).
type Delayed struct {
	PollInterval time.Duration `yaml:"poll_interval"` // default 500ms
	// Lease is how long a taken job stays invisible to other pollers before it
	// is handed out again (default 2m); longer than one full attempt.
	Lease  time.Duration `yaml:"lease"`
	Batch  int           `yaml:"batch"`  // jobs taken per poll (default 100)
	Shards int           `yaml:"shards"` // schedule shards for Redis Cluster (default 16)
}

// Qualification configures the FTD status change.
type Qualification struct {
	// Window is how long a qualification that arrived before its deposit
	// waits for it before it goes to the DLQ as an orphan (default 24h).
	Window time.Duration `yaml:"window"`
}

// Admin is the HTTP server for /healthz, /readyz and /metrics.
type Admin struct {
	Addr string `yaml:"addr"` // default ":9090"; "" after defaults means disabled only if Disabled
	// Disabled turns the admin server off.
	Disabled bool `yaml:"disabled"`
}

// Log configures zap.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default) or console
}

// Partner is one affiliate network or tracker.
type Partner struct {
	// Goals maps each goal the partner takes to its URL template and alias.
	// A goal a partner does not list is not sent (audited as skipped).
	Goals map[postback.Goal]GoalConfig `yaml:"goals"`
	// Token is the secret the network issued; rendered by the {token} macro
	// and redacted everywhere else.
	Token SecretRef `yaml:"token"`
	// AllowedHosts lists the hosts postbacks may go to; every template's
	// host must be one of them.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// Timeout bounds one HTTP attempt (default 5s).
	Timeout   time.Duration `yaml:"timeout"`
	Retry     RetryPolicy   `yaml:"retry"`
	RateLimit RateLimit     `yaml:"rate_limit"`
	Success   SuccessRule   `yaml:"success"`
	Breaker   Breaker       `yaml:"breaker"`
	// StatusWords maps internal statuses (pending, approved, rejected) to the
	// partner's words, rendered by {conv_status}. Defaults to the same words.
	StatusWords map[string]string `yaml:"status_words"`
	// TrackerString decodes a composite tracker value into macros.
	TrackerString TrackerString `yaml:"tracker_string"`
	// AllowNegativeRevshare sends negative revshare amounts; otherwise they
	// are audited as skipped.
	AllowNegativeRevshare bool `yaml:"allow_negative_revshare"`
}

// GoalConfig is one goal of one partner.
type GoalConfig struct {
	URL   string `yaml:"url"`   // template with {macro} placeholders
	Alias string `yaml:"alias"` // rendered by {goal_alias}; default the goal name
}

// RetryPolicy: a few quick tries in place, then the delayed path until MaxAge.
type RetryPolicy struct {
	QuickAttempts   int           `yaml:"quick_attempts"`   // attempts in place, default 3
	InitialInterval time.Duration `yaml:"initial_interval"` // default 100ms
	MaxInterval     time.Duration `yaml:"max_interval"`     // in place, default 1s
	// DelayedInitial and DelayedMax bound the jittered exponential delay of
	// the delayed path (defaults 30s and 30m).
	DelayedInitial time.Duration `yaml:"delayed_initial"`
	DelayedMax     time.Duration `yaml:"delayed_max"`
	// MaxAge is how long after its first attempt a postback is given up on
	// and sent to the DLQ (default 24h).
	MaxAge time.Duration `yaml:"max_age"`
}

// RateLimit caps requests to a partner; PerSecond 0 means unlimited.
type RateLimit struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"` // default max(1, PerSecond)
}

// SuccessRule says which answers mean "accepted".
type SuccessRule struct {
	Statuses []int `yaml:"statuses"` // default [200, 201, 202, 204]
	// BodyPattern, if set, is a regular expression the body must match to
	// count as accepted (for trackers that answer 200 with an error).
	BodyPattern string `yaml:"body_pattern"`
}

// Breaker stops sending to a partner that keeps failing, so its postbacks
// go straight to the delayed path instead of holding workers.
type Breaker struct {
	Failures int           `yaml:"failures"` // consecutive failures that open it, default 20
	Cooldown time.Duration `yaml:"cooldown"` // default 30s
}

// TrackerString decodes a composite tracker string, e.g. the value of param
// "tr" = "trID_1234567_aff1-tx9-c77-x_trID" with pattern
// "trID_{id}_{affid}-{transid}-{clickid}-{extra}_trID". Each field becomes the
// macro {tr.<name>}.
type TrackerString struct {
	Param   string `yaml:"param"`   // which params key holds it
	Pattern string `yaml:"pattern"` // literal text with {field} placeholders
}

// Merchant is one advertiser whose events postbackd turns into postbacks.
type Merchant struct {
	// DefaultPartner routes the events of a click that no event attributed
	// to a network. Optional: without one, such events go to the DLQ.
	DefaultPartner string `yaml:"default_partner"`
	// AttributionWait is how long a deposit or revenue event of a click that
	// has no network yet (and names none) waits in Redis for one, typically
	// brought by the click's registration on another topic, before it is
	// routed by DefaultPartner (default 1m, or half of qualification.window
	// when that is shorter; 0 turns waiting off). Nil only before
	// SetDefaults: an explicit 0 is kept.
	AttributionWait *time.Duration `yaml:"attribution_wait"`
	Deal            string         `yaml:"deal"` // "cpa" (default) or "hybrid"
	// RevsharePercent multiplies revenue for revshare postbacks (default 100
	// when the key is absent). Zero means unset only in Go: Load refuses an
	// explicit revshare_percent: 0 rather than read it as the default.
	RevsharePercent decimal.Decimal `yaml:"revshare_percent"`
}

// Wait is AttributionWait, 0 when unset.
func (m Merchant) Wait() time.Duration {
	if m.AttributionWait == nil {
		return 0
	}
	return *m.AttributionWait
}

// SecretRef names where a secret comes from: an environment variable or a
// file (trailing newline trimmed). Never inline.
//
// Printing never shows the secret: SecretRef implements fmt.Formatter, so
// every verb (%v, %+v, %#v, %s, %q, ...) prints String's redaction, also when
// the SecretRef is an exported field of a printed Config. Value is skipped by
// YAML and JSON marshalling. Read it with Reveal at the point of use.
type SecretRef struct {
	Env  string `yaml:"env" json:"env,omitempty"`
	File string `yaml:"file" json:"file,omitempty"`
	// Value is resolved by Load; it never comes from YAML and is never marshalled.
	Value string `yaml:"-" json:"-"`
}

// String redacts the secret so that printing a config never leaks it.
func (s SecretRef) String() string {
	if s.Value == "" {
		return ""
	}
	return "[REDACTED]"
}

// Format prints String for every verb, so that %+v and %#v (which would
// otherwise walk the struct and print Value) redact too.
func (s SecretRef) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, s.String())
}

// Reveal returns the secret itself. Call it only where the secret is used
// (rendering a URL, authenticating); never log its result.
func (s SecretRef) Reveal() string { return s.Value }
