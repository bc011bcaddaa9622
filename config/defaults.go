package config

import (
	"math"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/postback"
)

// Defaults. Each is documented next to its field in config.go and in
// REFERENCE.md; a zero value in the YAML means "use the default", except an
// explicit revshare_percent: 0, which Load refuses (see yamlcheck.go).
const (
	DefaultGroupID  = "postbackd"
	DefaultClientID = "postbackd"
	// DefaultMaxInFlight is enough to fill the Redis batches (up to 256
	// scripts each) at full speed; postbackd-load measured 4096 as no faster,
	// with twice the RSS and more CPU spent scanning the stacks of the
	// goroutines holding them.
	DefaultMaxInFlight      = 1024
	DefaultCommitInterval   = 200 * time.Millisecond
	DefaultDrainTimeout     = 30 * time.Second
	DefaultSessionTimeout   = 10 * time.Second
	DefaultRebalanceTimeout = 45 * time.Second
	DefaultStartOffset      = StartEarliest
	DefaultPollInterval     = 500 * time.Millisecond
	DefaultLease            = 2 * time.Minute
	DefaultDelayedBatch     = 100
	DefaultDelayedShards    = 16
	DefaultQualWindow       = 24 * time.Hour
	// DefaultAttributionWait covers the skew between the input topics of a
	// healthy consumer group, a member's restart included (seconds to tens
	// of seconds), with room to spare; a click whose registration arrives
	// is released at once, so the window costs latency only for clicks that
	// never get a network, which then go to the default partner a minute
	// late rather than at once to a partner that may be the wrong one.
	DefaultAttributionWait = time.Minute
	// HorizonMargin is what redis.record_ttl must exceed the longest horizon
	// by (see Config.Horizon).
	HorizonMargin          = time.Hour
	DefaultAdminAddr       = ":9090"
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "json"
	DefaultRedisPoolSize   = 128
	DefaultKeyPrefix       = "pb"
	DefaultRecordTTL       = 2160 * time.Hour
	DefaultPartnerTimeout  = 5 * time.Second
	DefaultQuickAttempts   = 3
	DefaultInitialInterval = 100 * time.Millisecond
	DefaultMaxInterval     = time.Second
	DefaultDelayedInitial  = 30 * time.Second
	DefaultDelayedMax      = 30 * time.Minute
	DefaultMaxAge          = 24 * time.Hour
	DefaultBreakerFailures = 20
	DefaultBreakerCooldown = 30 * time.Second
	DefaultDeal            = DealCPA
)

// Default topic names.
const (
	DefaultTopicDeposits       = "payments.deposits"
	DefaultTopicRevenue        = "payments.revenue"
	DefaultTopicRegistrations  = "players.registrations"
	DefaultTopicQualifications = "players.qualifications"
	DefaultTopicDispatched     = "postbacks.dispatched"
	DefaultTopicConfirmed      = "conversions.confirmed"
	DefaultTopicDLQ            = "postbacks.dlq"
)

// Enumerated values.
const (
	StartEarliest = "earliest"
	StartLatest   = "latest"

	DealCPA    = "cpa"
	DealHybrid = "hybrid"

	SASLPlain       = "plain"
	SASLScramSHA256 = "scram-sha-256"
	SASLScramSHA512 = "scram-sha-512"
)

// DefaultRevsharePercent is 100: the network receives the whole revenue
// figure and applies the affiliate's share itself.
var DefaultRevsharePercent = decimal.NewFromInt(100)

// MaxRevsharePercent bounds revshare_percent: above 1000 % is a typo, not a deal.
var MaxRevsharePercent = decimal.NewFromInt(1000)

// defaultSuccessStatuses returns a fresh slice so partners never share one.
func defaultSuccessStatuses() []int { return []int{200, 201, 202, 204} }

// statusKeys are the internal statuses a partner may give its own words for.
var statusKeys = []string{postback.StatusPending, postback.StatusApproved, postback.StatusRejected}

// SetDefaults fills every unset (zero) field with its default. It is safe to
// call twice: a second call changes nothing. Load calls it after environment
// overrides, so an override wins over a default and YAML wins over both only
// when the environment is silent.
func (c *Config) SetDefaults() {
	setString(&c.Kafka.GroupID, DefaultGroupID)
	setString(&c.Kafka.ClientID, DefaultClientID)

	setInt(&c.Redis.PoolSize, DefaultRedisPoolSize)
	setString(&c.Redis.KeyPrefix, DefaultKeyPrefix)
	setDuration(&c.Redis.RecordTTL, DefaultRecordTTL)

	t := &c.Topics
	setString(&t.Deposits, DefaultTopicDeposits)
	setString(&t.Revenue, DefaultTopicRevenue)
	setString(&t.Registrations, DefaultTopicRegistrations)
	setString(&t.Qualifications, DefaultTopicQualifications)
	setString(&t.Dispatched, DefaultTopicDispatched)
	setString(&t.Confirmed, DefaultTopicConfirmed)
	setString(&t.DLQ, DefaultTopicDLQ)

	cs := &c.Consumer
	setInt(&cs.MaxInFlight, DefaultMaxInFlight)
	setDuration(&cs.CommitInterval, DefaultCommitInterval)
	setDuration(&cs.DrainTimeout, DefaultDrainTimeout)
	setDuration(&cs.SessionTimeout, DefaultSessionTimeout)
	setDuration(&cs.RebalanceTimeout, DefaultRebalanceTimeout)
	setString(&cs.StartOffset, DefaultStartOffset)

	d := &c.Delayed
	setDuration(&d.PollInterval, DefaultPollInterval)
	setDuration(&d.Lease, DefaultLease)
	setInt(&d.Batch, DefaultDelayedBatch)
	setInt(&d.Shards, DefaultDelayedShards)

	setDuration(&c.Qualification.Window, DefaultQualWindow)
	setString(&c.Admin.Addr, DefaultAdminAddr)
	setString(&c.Log.Level, DefaultLogLevel)
	setString(&c.Log.Format, DefaultLogFormat)

	for name, p := range c.Partners {
		p.setDefaults()
		c.Partners[name] = p
	}
	for name, m := range c.Merchants {
		setString(&m.Deal, DefaultDeal)
		if m.AttributionWait == nil {
			// Shorter than the qualification window, which validation
			// requires, also when only the window was set short.
			w := min(DefaultAttributionWait, c.Qualification.Window/2)
			m.AttributionWait = &w
		}
		if m.RevsharePercent.IsZero() {
			m.RevsharePercent = DefaultRevsharePercent
		}
		c.Merchants[name] = m
	}
}

func (p *Partner) setDefaults() {
	setDuration(&p.Timeout, DefaultPartnerTimeout)

	r := &p.Retry
	setInt(&r.QuickAttempts, DefaultQuickAttempts)
	setDuration(&r.InitialInterval, DefaultInitialInterval)
	setDuration(&r.MaxInterval, DefaultMaxInterval)
	setDuration(&r.DelayedInitial, DefaultDelayedInitial)
	setDuration(&r.DelayedMax, DefaultDelayedMax)
	setDuration(&r.MaxAge, DefaultMaxAge)

	if p.RateLimit.Burst == 0 {
		p.RateLimit.Burst = int(math.Max(1, p.RateLimit.PerSecond))
	}
	if len(p.Success.Statuses) == 0 {
		p.Success.Statuses = defaultSuccessStatuses()
	}
	setInt(&p.Breaker.Failures, DefaultBreakerFailures)
	setDuration(&p.Breaker.Cooldown, DefaultBreakerCooldown)

	// Copy before filling so that a map shared by two partners (a YAML
	// anchor) is never written through.
	words := make(map[string]string, len(statusKeys)+len(p.StatusWords))
	for k, v := range p.StatusWords {
		words[k] = v
	}
	for _, k := range statusKeys {
		if _, ok := words[k]; !ok {
			words[k] = k
		}
	}
	p.StatusWords = words

	goals := make(map[postback.Goal]GoalConfig, len(p.Goals))
	for g, gc := range p.Goals {
		setString(&gc.Alias, string(g))
		goals[g] = gc
	}
	if p.Goals != nil {
		p.Goals = goals
	}
}

func setString(p *string, def string) {
	if *p == "" {
		*p = def
	}
}

func setInt(p *int, def int) {
	if *p == 0 {
		*p = def
	}
}

func setDuration(p *time.Duration, def time.Duration) {
	if *p == 0 {
		*p = def
	}
}

// minCancelGrace is CancelGrace's floor, the same as the consumer's own
// default (consumer.DefaultCancelGrace; config does not import consumer).
const minCancelGrace = 2 * time.Second

// CancelGrace is how long a drain waits, after cancelling in-flight
// handlers, for them to return: the longest partner timeout and a second,
// at least 2s. An HTTP attempt cannot be cut short (it runs to its answer
// or its timeout), so a handler in the middle of one returns only then.
func (c *Config) CancelGrace() time.Duration {
	g := minCancelGrace
	for _, p := range c.Partners {
		g = max(g, p.Timeout+time.Second)
	}
	return g
}
