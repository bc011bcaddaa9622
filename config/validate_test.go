package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/postback"
)

// validConfig is a small configuration that passes Validate; each row of
// TestValidateRules breaks exactly one thing in it.
func validConfig() *Config {
	c := &Config{
		Kafka: Kafka{Brokers: []string{"kafka-1:9092"}},
		Redis: Redis{Addrs: []string{"redis-1:6379"}},
		Partners: map[string]Partner{
			"net": {
				AllowedHosts: []string{"t.example"},
				Token:        SecretRef{Env: "NET_TOKEN", Value: "tok"},
				Goals: map[postback.Goal]GoalConfig{
					postback.GoalFTD:       {URL: "https://t.example/conv?cid={click_id}&token={token}&s={conv_status}&a={amount}"},
					postback.GoalFTDStatus: {URL: "https://t.example/change?cid={click_id}&token={token}&s={conv_status}"},
				},
				TrackerString: TrackerString{Param: "tr", Pattern: "trID_{id}_{affid}-{clickid}_trID"},
			},
		},
		Merchants: map[string]Merchant{"m1": {DefaultPartner: "net"}},
	}
	c.SetDefaults()
	return c
}

// partner returns a mutation of partner "net".
func partner(f func(p *Partner)) func(c *Config) {
	return func(c *Config) {
		p := c.Partners["net"]
		f(&p)
		c.Partners["net"] = p
	}
}

// goalURL returns a mutation setting the URL of goal g of partner "net".
func goalURL(g postback.Goal, url string) func(c *Config) {
	return partner(func(p *Partner) {
		gc := p.Goals[g]
		gc.URL = url
		p.Goals[g] = gc
	})
}

func TestValidConfigIsValid(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("base config of the rule tests must be valid: %v", err)
	}
}

func TestValidateRules(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(existing, []byte("not checked here"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	// want lists "path: message fragment" for every expected problem, in
	// the sorted order Validate reports them; empty means valid.
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string
	}{
		// kafka
		{"no brokers", func(c *Config) { c.Kafka.Brokers = nil }, []string{"kafka.brokers: at least one broker"}},
		{"broker without port", func(c *Config) { c.Kafka.Brokers = []string{"kafka-1"} }, []string{"kafka.brokers[0]: must be host:port"}},
		{"broker without host", func(c *Config) { c.Kafka.Brokers = []string{"k:9092", ":9092"} }, []string{"kafka.brokers[1]: has no host"}},
		{"broker bad port", func(c *Config) { c.Kafka.Brokers = []string{"k:90920"} }, []string{"kafka.brokers[0]: has an invalid port"}},
		{"empty group id", func(c *Config) { c.Kafka.GroupID = "" }, []string{"kafka.group_id: must not be empty"}},
		{"empty client id", func(c *Config) { c.Kafka.ClientID = "" }, []string{"kafka.client_id: must not be empty"}},
		{"unknown sasl mechanism", func(c *Config) {
			c.Kafka.SASL = SASL{Mechanism: "gssapi", Username: "u", Password: SecretRef{Env: "P", Value: "p"}}
		}, []string{`kafka.sasl.mechanism: must be one of "", "plain", "scram-sha-256", "scram-sha-512", got "gssapi"`}},
		{"sasl without password", func(c *Config) { c.Kafka.SASL = SASL{Mechanism: SASLPlain, Username: "u"} }, []string{"kafka.sasl.password: required when mechanism is plain"}},
		{"sasl without username", func(c *Config) {
			c.Kafka.SASL = SASL{Mechanism: SASLScramSHA512, Password: SecretRef{Env: "P", Value: "p"}}
		}, []string{"kafka.sasl.username: required when mechanism is scram-sha-512"}},
		{"sasl username without mechanism", func(c *Config) { c.Kafka.SASL = SASL{Username: "u"} }, []string{"kafka.sasl.mechanism: must be set when a username"}},
		{"sasl password from both env and file", func(c *Config) {
			c.Kafka.SASL = SASL{Mechanism: SASLPlain, Username: "u", Password: SecretRef{Env: "P", File: "/p"}}
		}, []string{"kafka.sasl.password: set exactly one of env and file"}},
		{"tls ca file missing", func(c *Config) { c.Kafka.TLS = TLS{Enabled: true, CAFile: missing} }, []string{"kafka.tls.ca_file: stat " + missing}},
		{"tls file given while disabled", func(c *Config) { c.Kafka.TLS = TLS{CAFile: existing} }, []string{"kafka.tls.ca_file: set but tls.enabled is false"}},
		{"tls cert without key", func(c *Config) { c.Kafka.TLS = TLS{Enabled: true, CertFile: existing} }, []string{"kafka.tls: cert_file and key_file go together"}},
		{"tls all files present", func(c *Config) {
			c.Kafka.TLS = TLS{Enabled: true, CAFile: existing, CertFile: existing, KeyFile: existing}
		}, nil},

		// redis
		{"no redis addrs", func(c *Config) { c.Redis.Addrs = nil }, []string{"redis.addrs: at least one address"}},
		{"single node with two addrs", func(c *Config) { c.Redis.Addrs = []string{"a:1", "b:2"} }, []string{"redis.addrs: a single node takes exactly one address, got 2"}},
		{"cluster with three addrs", func(c *Config) { c.Redis.Cluster = true; c.Redis.Addrs = []string{"a:1", "b:2", "c:3"} }, nil},
		{"cluster with one seed addr", func(c *Config) { c.Redis.Cluster = true }, nil},
		{"redis addr without port", func(c *Config) { c.Redis.Addrs = []string{"redis"} }, []string{"redis.addrs[0]: must be host:port"}},
		{"cluster with db", func(c *Config) { c.Redis.Cluster = true; c.Redis.DB = 2 }, []string{"redis.db: must be 0 with redis.cluster"}},
		{"negative db", func(c *Config) { c.Redis.DB = -1 }, []string{"redis.db: must not be negative"}},
		{"zero pool", func(c *Config) { c.Redis.PoolSize = 0 }, []string{"redis.pool_size: must be positive, got 0"}},
		{"brace in key prefix", func(c *Config) { c.Redis.KeyPrefix = "pb{x}" }, []string{"redis.key_prefix: must not contain '{' or '}'"}},
		{"empty key prefix", func(c *Config) { c.Redis.KeyPrefix = "" }, []string{"redis.key_prefix: must not be empty"}},
		{"zero record ttl", func(c *Config) { c.Redis.RecordTTL = 0 }, []string{"redis.record_ttl: must be a positive duration, got 0s"}},
		{"redis password env empty", func(c *Config) { c.Redis.Password = SecretRef{Env: "REDIS_PASSWORD"} }, []string{"redis.password.env: environment variable REDIS_PASSWORD is unset or empty"}},
		{"redis password file empty", func(c *Config) { c.Redis.Password = SecretRef{File: existing} }, []string{"redis.password.file: secret file " + existing + " is empty"}},

		// topics
		{"empty topic", func(c *Config) { c.Topics.DLQ = "" }, []string{"topics.dlq: must not be empty"}},
		{"duplicate topic", func(c *Config) { c.Topics.DLQ = c.Topics.Dispatched }, []string{`topics.dlq: "postbacks.dispatched" is already the name of topics.dispatched`}},
		{"invalid topic name", func(c *Config) { c.Topics.Deposits = "pay ments" }, []string{`topics.deposits: "pay ments" is not a valid Kafka topic name`}},

		// consumer, delayed, qualification, admin, log
		{"zero max in flight", func(c *Config) { c.Consumer.MaxInFlight = 0 }, []string{"consumer.max_in_flight: must be positive"}},
		{"negative commit interval", func(c *Config) { c.Consumer.CommitInterval = -time.Second }, []string{"consumer.commit_interval: must be a positive duration, got -1s"}},
		{"zero drain timeout", func(c *Config) { c.Consumer.DrainTimeout = 0 }, []string{"consumer.drain_timeout: must be a positive duration"}},
		{"zero session timeout", func(c *Config) { c.Consumer.SessionTimeout = 0 }, []string{"consumer.session_timeout: must be a positive duration"}},
		{"zero rebalance timeout", func(c *Config) { c.Consumer.RebalanceTimeout = 0 }, []string{"consumer.rebalance_timeout: must be a positive duration"}},
		{"rebalance no longer than drain plus the longest partner timeout", func(c *Config) {
			p := c.Partners["net"]
			p.Timeout = 14 * time.Second
			c.Partners["net"] = p
			c.Delayed.Lease = time.Hour // the claim lease grows with the timeout
		}, []string{"consumer.rebalance_timeout: 45s must be longer than drain_timeout 30s plus the cancel grace 15s (the longest partners.*.timeout and a second, at least 2s)"}},
		{"rebalance just longer than drain plus the longest partner timeout", func(c *Config) {
			p := c.Partners["net"]
			p.Timeout = 14*time.Second - time.Millisecond
			c.Partners["net"] = p
			c.Delayed.Lease = time.Hour
		}, nil},
		{"drain alone as long as rebalance", func(c *Config) { c.Consumer.DrainTimeout = 44 * time.Second }, []string{
			"consumer.rebalance_timeout: 45s must be longer than drain_timeout 44s plus the cancel grace 6s"}},
		{"unknown start offset", func(c *Config) { c.Consumer.StartOffset = "newest" }, []string{`consumer.start_offset: must be one of "earliest", "latest", got "newest"`}},
		{"zero poll interval", func(c *Config) { c.Delayed.PollInterval = 0 }, []string{"delayed.poll_interval: must be a positive duration"}},
		{"lease shorter than the claim lease", func(c *Config) { c.Delayed.Lease = 29 * time.Second }, []string{
			"delayed.lease: 29s is shorter than the claim lease of partner net (3 × (timeout 5s + 1.5 × retry.max_interval 1s) + 2 × 5s = 29.5s)",
		}},
		{"lease as long as the claim lease", func(c *Config) { c.Delayed.Lease = 29*time.Second + 500*time.Millisecond }, nil},
		{"zero batch", func(c *Config) { c.Delayed.Batch = 0 }, []string{"delayed.batch: must be positive"}},
		{"zero shards", func(c *Config) { c.Delayed.Shards = 0 }, []string{"delayed.shards: must be positive"}},
		{"zero qualification window", func(c *Config) { c.Qualification.Window = 0 }, []string{"qualification.window: must be a positive duration"}},
		{"admin addr without port", func(c *Config) { c.Admin.Addr = "9090" }, []string{`admin.addr: must be host:port, got "9090"`}},
		{"admin disabled ignores addr", func(c *Config) { c.Admin.Addr = "nonsense"; c.Admin.Disabled = true }, nil},
		{"unknown log level", func(c *Config) { c.Log.Level = "verbose" }, []string{`log.level: must be one of "debug", "info", "warn", "error", got "verbose"`}},
		{"unknown log format", func(c *Config) { c.Log.Format = "text" }, []string{`log.format: must be one of "json", "console", got "text"`}},

		// partners
		{"no partners", func(c *Config) { c.Partners = nil }, []string{
			`merchants.m1.default_partner: names no configured partner: "net"`,
			"partners: at least one partner is required",
		}},
		{"partner without goals", partner(func(p *Partner) { p.Goals = nil }), []string{"partners.net.goals: at least one goal is required"}},
		{"unknown goal", partner(func(p *Partner) { p.Goals["deposit"] = GoalConfig{URL: "https://t.example/", Alias: "d"} }), []string{
			"partners.net.goals.deposit: unknown goal; want one of reg, trial, ftd, ftd_status, rdep, revshare",
		}},
		{"empty goal url", goalURL(postback.GoalFTD, ""), []string{"partners.net.goals.ftd.url: must not be empty"}},
		{"unknown macros", goalURL(postback.GoalFTD, "https://t.example/c?a={foo}&b={click_id}&c={bar}&d={foo}"), []string{"partners.net.goals.ftd.url: unknown macro(s) foo, bar"}},
		{"tracker macro not in pattern", goalURL(postback.GoalFTD, "https://t.example/c?a={tr.affid}&b={tr.transid}"), []string{"partners.net.goals.ftd.url: unknown macro(s) tr.transid"}},
		{"empty param macro", goalURL(postback.GoalFTD, "https://t.example/c?a={param.}"), []string{"partners.net.goals.ftd.url: unknown macro(s) param."}},
		{"every macro known", goalURL(postback.GoalFTD, "https://t.example/c/{click_id}?a={amount}&b={currency}&c={token}&d={goal}&e={goal_alias}&f={conv_status}"+
			"&g={transaction_id}&h={event_id}&i={player_id}&j={offer_id}&k={merchant_id}&l={timestamp}&m={param.custom2}&n={tr.id}&o={tr.affid}&p={tr.clickid}"), nil},
		{"unbalanced brace", goalURL(postback.GoalFTD, "https://t.example/c?a={click_id"), []string{"partners.net.goals.ftd.url: unclosed '{'"}},
		{"relative url", goalURL(postback.GoalFTD, "/c?a={click_id}"), []string{"partners.net.goals.ftd.url: must be an absolute http or https URL"}},
		{"ftp url", goalURL(postback.GoalFTD, "ftp://t.example/c?a={click_id}"), []string{`partners.net.goals.ftd.url: must be an absolute http or https URL, got scheme "ftp"`}},
		{"host not allowed", goalURL(postback.GoalFTD, "https://evil.example/c?a={click_id}"), []string{`partners.net.goals.ftd.url: host "evil.example" is not in allowed_hosts`}},
		{"host is a macro", goalURL(postback.GoalFTD, "https://{param.host}/c?a={click_id}"), []string{"partners.net.goals.ftd.url: the scheme and host must be literal"}},
		{"host partly a macro", goalURL(postback.GoalFTD, "https://t.example{param.x}/c"), []string{"partners.net.goals.ftd.url: the scheme and host must be literal"}},
		{"user info in url", goalURL(postback.GoalFTD, "https://u:p@t.example/c?a={click_id}"), []string{"partners.net.goals.ftd.url: must not carry user info"}},
		{"host match ignores case and port", goalURL(postback.GoalFTD, "https://T.Example:8443/c?a={click_id}"), nil},
		{"host:port entry needs that port", func(c *Config) {
			partner(func(p *Partner) { p.AllowedHosts = []string{"t.example:8443"} })(c)
			goalURL(postback.GoalFTDStatus, "https://t.example:8443/c?s={conv_status}")(c)
		}, []string{`partners.net.goals.ftd.url: host "t.example" is not in allowed_hosts`}},
		{"status change without conv_status", goalURL(postback.GoalFTDStatus, "https://t.example/change?cid={click_id}"), []string{
			"partners.net.goals.ftd_status.url: must use {conv_status}",
		}},
		{"empty alias", partner(func(p *Partner) { p.Goals[postback.GoalFTD] = GoalConfig{URL: p.Goals[postback.GoalFTD].URL} }), []string{
			"partners.net.goals.ftd.alias: must not be empty",
		}},
		{"no allowed hosts", partner(func(p *Partner) { p.AllowedHosts = nil }), []string{
			"partners.net.allowed_hosts: at least one host is required",
			`partners.net.goals.ftd.url: host "t.example" is not in allowed_hosts`,
			`partners.net.goals.ftd_status.url: host "t.example" is not in allowed_hosts`,
		}},
		{"allowed host with scheme", partner(func(p *Partner) { p.AllowedHosts = append(p.AllowedHosts, "https://t.example") }), []string{
			`partners.net.allowed_hosts[1]: must be a bare host name (optionally host:port), got "https://t.example"`,
		}},
		{"token from env and file", partner(func(p *Partner) { p.Token = SecretRef{Env: "T", File: "/t", Value: "x"} }), []string{"partners.net.token: set exactly one of env and file"}},
		{"token env empty", partner(func(p *Partner) { p.Token = SecretRef{Env: "NET_TOKEN"} }), []string{"partners.net.token.env: environment variable NET_TOKEN is unset or empty"}},
		{"token required by {token}", partner(func(p *Partner) { p.Token = SecretRef{} }), []string{
			"partners.net.token: required because a goal URL uses {token}",
		}},
		{"no token and no {token}", func(c *Config) {
			partner(func(p *Partner) { p.Token = SecretRef{} })(c)
			goalURL(postback.GoalFTD, "https://t.example/c?a={click_id}")(c)
			goalURL(postback.GoalFTDStatus, "https://t.example/c?s={conv_status}")(c)
		}, nil},
		{"zero timeout", partner(func(p *Partner) { p.Timeout = 0 }), []string{"partners.net.timeout: must be a positive duration"}},
		{"zero quick attempts", partner(func(p *Partner) { p.Retry.QuickAttempts = 0 }), []string{"partners.net.retry.quick_attempts: must be positive"}},
		{"initial above max interval", partner(func(p *Partner) { p.Retry.InitialInterval = 2 * time.Second }), []string{
			"partners.net.retry.initial_interval: 2s is longer than retry.max_interval 1s",
		}},
		{"delayed initial above delayed max", partner(func(p *Partner) { p.Retry.DelayedInitial = time.Hour }), []string{
			"partners.net.retry.delayed_initial: 1h0m0s is longer than retry.delayed_max 30m0s",
		}},
		{"zero max age", partner(func(p *Partner) { p.Retry.MaxAge = 0 }), []string{"partners.net.retry.max_age: must be a positive duration"}},
		{"negative rate", partner(func(p *Partner) { p.RateLimit.PerSecond = -1 }), []string{"partners.net.rate_limit.per_second: must not be negative"}},
		{"negative burst", partner(func(p *Partner) { p.RateLimit.Burst = -1 }), []string{"partners.net.rate_limit.burst: must not be negative"}},
		{"no success statuses", partner(func(p *Partner) { p.Success.Statuses = nil }), []string{"partners.net.success.statuses: at least one HTTP status"}},
		{"success status out of range", partner(func(p *Partner) { p.Success.Statuses = []int{200, 600} }), []string{
			"partners.net.success.statuses[1]: must be an HTTP status in 100..599, got 600",
		}},
		{"bad body pattern", partner(func(p *Partner) { p.Success.BodyPattern = "(ok" }), []string{"partners.net.success.body_pattern: error parsing regexp"}},
		{"zero breaker failures", partner(func(p *Partner) { p.Breaker.Failures = -1 }), []string{"partners.net.breaker.failures: must be positive"}},
		{"zero breaker cooldown", partner(func(p *Partner) { p.Breaker.Cooldown = 0 }), []string{"partners.net.breaker.cooldown: must be a positive duration"}},
		{"unknown status word", partner(func(p *Partner) { p.StatusWords["hold"] = "hold" }), []string{
			`partners.net.status_words.hold: unknown status; want one of "pending", "approved", "rejected"`,
		}},
		{"empty status word", partner(func(p *Partner) { p.StatusWords["approved"] = "" }), []string{"partners.net.status_words.approved: must not be empty"}},
		{"tracker pattern without param", partner(func(p *Partner) { p.TrackerString.Param = "" }), []string{"partners.net.tracker_string.param: required when pattern is set"}},
		{"tracker param without pattern", partner(func(p *Partner) { p.TrackerString.Pattern = "" }), []string{"partners.net.tracker_string.pattern: required when param is set"}},
		{"tracker field not an identifier", partner(func(p *Partner) { p.TrackerString.Pattern = "trID_{1id}_trID" }), []string{
			"partners.net.tracker_string.pattern: unknown macro(s) 1id",
		}},
		{"tracker pattern unbalanced", partner(func(p *Partner) { p.TrackerString.Pattern = "trID_{id_trID" }), []string{"partners.net.tracker_string.pattern: unclosed '{'"}},
		{"tracker pattern without field", partner(func(p *Partner) { p.TrackerString.Pattern = "trID" }), []string{"partners.net.tracker_string.pattern: has no {field}"}},
		{"tracker field twice", partner(func(p *Partner) { p.TrackerString.Pattern = "{id}-{id}" }), []string{`partners.net.tracker_string.pattern: field "id" appears twice`}},
		{"tracker fields adjacent", partner(func(p *Partner) { p.TrackerString.Pattern = "{id}{affid}" }), []string{
			"partners.net.tracker_string.pattern: two fields must be separated by literal text",
		}},

		// merchants
		{"no merchants", func(c *Config) { c.Merchants = nil }, []string{"merchants: at least one merchant is required"}},
		{"unknown default partner", func(c *Config) {
			c.Merchants["m1"] = Merchant{DefaultPartner: "nope", Deal: DealCPA, RevsharePercent: DefaultRevsharePercent}
		}, []string{
			`merchants.m1.default_partner: names no configured partner: "nope" (have "net")`,
		}},
		{"no default partner: optional", func(c *Config) { c.Merchants["m1"] = Merchant{Deal: DealCPA, RevsharePercent: DefaultRevsharePercent} }, nil},
		{"negative attribution wait", func(c *Config) { c.Merchants["m1"] = withWait(c.Merchants["m1"], -time.Second) }, []string{
			"merchants.m1.attribution_wait: must not be negative (0 turns waiting off), got -1s",
		}},
		{"attribution wait off", func(c *Config) { c.Merchants["m1"] = withWait(c.Merchants["m1"], 0) }, nil},
		{"attribution wait as long as the qualification window", func(c *Config) {
			c.Merchants["m1"] = withWait(c.Merchants["m1"], c.Qualification.Window)
		}, []string{
			"merchants.m1.attribution_wait: 24h0m0s must be shorter than qualification.window (24h0m0s)",
		}},

		// horizons: record_ttl must outlive everything that still refers to a record
		{"record ttl shorter than the horizon", func(c *Config) {
			c.Redis.RecordTTL = 48 * time.Hour
			c.Merchants["m2"] = withWait(Merchant{DefaultPartner: "net", Deal: DealCPA, RevsharePercent: DefaultRevsharePercent}, 10*time.Minute)
		}, []string{
			"redis.record_ttl: 48h0m0s is shorter than the longest time a record can still be needed, " +
				"partners.net.retry.max_age (24h0m0s) + qualification.window (24h0m0s) + merchants.m2.attribution_wait (10m0s) = 48h10m0s + a margin of 1h0m0s = 49h10m0s",
		}},
		{"record ttl just long enough", func(c *Config) {
			c.Redis.RecordTTL = 49*time.Hour + time.Minute
		}, nil},
		{"record ttl names the longest max age", func(c *Config) {
			c.Redis.RecordTTL = 72 * time.Hour
			p := c.Partners["net"]
			p.Retry.MaxAge = 48 * time.Hour
			c.Partners["net"] = p
		}, []string{
			"redis.record_ttl: 72h0m0s is shorter than the longest time a record can still be needed, partners.net.retry.max_age (48h0m0s) + qualification.window (24h0m0s) + merchants.m1.attribution_wait (1m0s)",
		}},
		{"unknown deal", func(c *Config) {
			c.Merchants["m1"] = Merchant{DefaultPartner: "net", Deal: "revshare", RevsharePercent: DefaultRevsharePercent}
		}, []string{`merchants.m1.deal: must be one of "cpa", "hybrid", got "revshare"`}},
		{"zero revshare percent", func(c *Config) { c.Merchants["m1"] = Merchant{DefaultPartner: "net", Deal: DealHybrid} }, []string{
			"merchants.m1.revshare_percent: must be in (0, 1000], got 0",
		}},
		{"negative revshare percent", func(c *Config) {
			c.Merchants["m1"] = Merchant{DefaultPartner: "net", Deal: DealHybrid, RevsharePercent: decimal.NewFromInt(-5)}
		}, []string{"merchants.m1.revshare_percent: must be in (0, 1000], got -5"}},
		{"revshare percent above 1000", func(c *Config) {
			c.Merchants["m1"] = Merchant{DefaultPartner: "net", Deal: DealHybrid, RevsharePercent: decimal.RequireFromString("1000.01")}
		}, []string{"merchants.m1.revshare_percent: must be in (0, 1000], got 1000.01"}},
		{"revshare percent 1000", func(c *Config) {
			c.Merchants["m1"] = Merchant{DefaultPartner: "net", Deal: DealHybrid, RevsharePercent: decimal.NewFromInt(1000)}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Validate() = %v, want a *ValidationError", err)
			}
			assertProblems(t, verr.Problems, tt.want)
		})
	}
}

// assertProblems checks that got has one problem per want, in order, each
// with want's key path and containing want's message fragment.
func assertProblems(t *testing.T, got, want []string) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		path, frag, _ := strings.Cut(want[i], ": ")
		gotPath, gotMsg, _ := strings.Cut(got[i], ": ")
		ok = gotPath == path && strings.Contains(gotMsg, frag)
	}
	if !ok {
		t.Fatalf("problems:\n  %s\nwant (path: fragment):\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestValidationErrorListsOnePerLine(t *testing.T) {
	err := &ValidationError{Problems: []string{"a: one", "b: two"}}
	want := "config: 2 problems:\n  a: one\n  b: two"
	if err.Error() != want {
		t.Fatalf("Error() = %q, want %q", err.Error(), want)
	}
	one := &ValidationError{Problems: []string{"a: one"}}
	if want := "config: 1 problem:\n  a: one"; one.Error() != want {
		t.Fatalf("Error() = %q, want %q", one.Error(), want)
	}
}

func TestKnownMacro(t *testing.T) {
	p := Partner{TrackerString: TrackerString{Param: "tr", Pattern: "trID_{id}_{affid}-{clickid}_trID"}}
	tests := []struct {
		name string
		want bool
	}{
		{"click_id", true},
		{"amount", true},
		{"currency", true},
		{"token", true},
		{"goal", true},
		{"goal_alias", true},
		{"conv_status", true},
		{"transaction_id", true},
		{"event_id", true},
		{"player_id", true},
		{"offer_id", true},
		{"merchant_id", true},
		{"timestamp", true},
		{"param.custom2", true},
		{"param.any-key.with.dots", true},
		{"param.", false},
		{"param.<name>", true}, // any params key is allowed, however odd
		{"tr.id", true},
		{"tr.clickid", true},
		{"tr.extra", false},
		{"tr.", false},
		{"tr.<field>", false},
		{"clickid", false},
		{"Click_ID", false},
		{"", false},
	}
	known := KnownMacro(p)
	for _, tt := range tests {
		if got := known(tt.name); got != tt.want {
			t.Errorf("KnownMacro(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	if KnownMacro(Partner{})("tr.id") {
		t.Error("a partner without a tracker pattern must not know tr.id")
	}
}

func withWait(m Merchant, d time.Duration) Merchant {
	m.AttributionWait = &d
	return m
}
