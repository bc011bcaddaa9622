package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"go.yaml.in/yaml/v3"

	"github.com/postbackd/postbackd/postback"
)

var update = flag.Bool("update", false, "rewrite golden files")

// minimalYAML is the smallest useful configuration: everything else comes
// from defaults.
const minimalYAML = `
kafka:
  brokers: ["kafka-1:9092"]
redis:
  addrs: ["redis-1:6379"]
partners:
  net:
    allowed_hosts: ["t.example"]
    token: {env: NET_TOKEN}
    goals:
      ftd:
        url: "https://t.example/conv?cid={click_id}&token={token}&s={conv_status}"
merchants:
  m1:
    default_partner: net
`

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// env returns a getenv backed by a map.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func loadString(t *testing.T, content string, vars map[string]string) (*Config, error) {
	t.Helper()
	return Load(writeFile(t, t.TempDir(), "postbackd.yaml", content), env(vars))
}

func mustLoad(t *testing.T, content string, vars map[string]string) *Config {
	t.Helper()
	cfg, err := loadString(t, content, vars)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

func TestLoadDefaults(t *testing.T) {
	cfg := mustLoad(t, minimalYAML, map[string]string{"NET_TOKEN": "tok"})
	p := cfg.Partners["net"]
	m := cfg.Merchants["m1"]
	tests := []struct {
		key  string
		got  any
		want any
	}{
		{"kafka.group_id", cfg.Kafka.GroupID, "postbackd"},
		{"kafka.client_id", cfg.Kafka.ClientID, "postbackd"},
		{"topics.deposits", cfg.Topics.Deposits, "payments.deposits"},
		{"topics.revenue", cfg.Topics.Revenue, "payments.revenue"},
		{"topics.registrations", cfg.Topics.Registrations, "players.registrations"},
		{"topics.qualifications", cfg.Topics.Qualifications, "players.qualifications"},
		{"topics.dispatched", cfg.Topics.Dispatched, "postbacks.dispatched"},
		{"topics.confirmed", cfg.Topics.Confirmed, "conversions.confirmed"},
		{"topics.dlq", cfg.Topics.DLQ, "postbacks.dlq"},
		{"consumer.max_in_flight", cfg.Consumer.MaxInFlight, 1024},
		{"consumer.commit_interval", cfg.Consumer.CommitInterval, 200 * time.Millisecond},
		{"consumer.drain_timeout", cfg.Consumer.DrainTimeout, 30 * time.Second},
		{"consumer.session_timeout", cfg.Consumer.SessionTimeout, 10 * time.Second},
		{"consumer.rebalance_timeout", cfg.Consumer.RebalanceTimeout, 45 * time.Second},
		{"consumer.start_offset", cfg.Consumer.StartOffset, "earliest"},
		{"delayed.poll_interval", cfg.Delayed.PollInterval, 500 * time.Millisecond},
		{"delayed.lease", cfg.Delayed.Lease, 2 * time.Minute},
		{"delayed.batch", cfg.Delayed.Batch, 100},
		{"delayed.shards", cfg.Delayed.Shards, 16},
		{"qualification.window", cfg.Qualification.Window, 24 * time.Hour},
		{"admin.addr", cfg.Admin.Addr, ":9090"},
		{"admin.disabled", cfg.Admin.Disabled, false},
		{"log.level", cfg.Log.Level, "info"},
		{"log.format", cfg.Log.Format, "json"},
		{"redis.cluster", cfg.Redis.Cluster, false},
		{"redis.pool_size", cfg.Redis.PoolSize, 128},
		{"redis.key_prefix", cfg.Redis.KeyPrefix, "pb"},
		{"redis.record_ttl", cfg.Redis.RecordTTL, 2160 * time.Hour},
		{"partners.net.timeout", p.Timeout, 5 * time.Second},
		{"partners.net.retry.quick_attempts", p.Retry.QuickAttempts, 3},
		{"partners.net.retry.initial_interval", p.Retry.InitialInterval, 100 * time.Millisecond},
		{"partners.net.retry.max_interval", p.Retry.MaxInterval, time.Second},
		{"partners.net.retry.delayed_initial", p.Retry.DelayedInitial, 30 * time.Second},
		{"partners.net.retry.delayed_max", p.Retry.DelayedMax, 30 * time.Minute},
		{"partners.net.retry.max_age", p.Retry.MaxAge, 24 * time.Hour},
		{"partners.net.rate_limit.per_second", p.RateLimit.PerSecond, 0.0},
		{"partners.net.rate_limit.burst", p.RateLimit.Burst, 1},
		{"partners.net.success.statuses", p.Success.Statuses, []int{200, 201, 202, 204}},
		{"partners.net.success.body_pattern", p.Success.BodyPattern, ""},
		{"partners.net.breaker.failures", p.Breaker.Failures, 20},
		{"partners.net.breaker.cooldown", p.Breaker.Cooldown, 30 * time.Second},
		{"partners.net.status_words", p.StatusWords, map[string]string{"pending": "pending", "approved": "approved", "rejected": "rejected"}},
		{"partners.net.goals.ftd.alias", p.Goals[postback.GoalFTD].Alias, "ftd"},
		{"merchants.m1.deal", m.Deal, "cpa"},
		{"merchants.m1.revshare_percent", m.RevsharePercent.String(), "100"},
		{"merchants.m1.attribution_wait", m.Wait(), time.Minute},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %#v, want %#v", tt.key, tt.got, tt.want)
		}
	}
}

// TestLoadKeepsExplicitValues checks that defaults fill only what is unset.
func TestLoadKeepsExplicitValues(t *testing.T) {
	cfg := mustLoad(t, `
kafka: {brokers: ["k:9092"], group_id: g, client_id: c}
redis: {addrs: ["r:6379"], pool_size: 7, key_prefix: x, record_ttl: 12h}
topics: {deposits: d, revenue: rv, registrations: rg, qualifications: q, dispatched: ds, confirmed: cf, dlq: dl}
consumer: {max_in_flight: 9, commit_interval: 1s, drain_timeout: 2s, session_timeout: 3s, rebalance_timeout: 14s, start_offset: latest}
delayed: {poll_interval: 5s, lease: 6m, batch: 8, shards: 2}
qualification: {window: 7h}
admin: {addr: "127.0.0.1:1"}
log: {level: debug, format: console}
partners:
  net:
    allowed_hosts: [t.example]
    goals: {reg: {url: "https://t.example/r?c={click_id}", alias: signup}}
    timeout: 9s
    retry: {quick_attempts: 2, initial_interval: 10ms, max_interval: 20ms, delayed_initial: 1m, delayed_max: 2m, max_age: 3h}
    rate_limit: {per_second: 2.5, burst: 4}
    success: {statuses: [200], body_pattern: "^OK"}
    breaker: {failures: 3, cooldown: 1m}
    status_words: {approved: "1"}
merchants:
  m1: {default_partner: net, deal: hybrid, revshare_percent: 35.5, attribution_wait: 0s}
`, nil)
	p := cfg.Partners["net"]
	want := Config{
		Kafka:         Kafka{Brokers: []string{"k:9092"}, GroupID: "g", ClientID: "c"},
		Redis:         Redis{Addrs: []string{"r:6379"}, PoolSize: 7, KeyPrefix: "x", RecordTTL: 12 * time.Hour},
		Topics:        Topics{"d", "rv", "rg", "q", "ds", "cf", "dl"},
		Consumer:      Consumer{9, time.Second, 2 * time.Second, 3 * time.Second, 14 * time.Second, "latest"},
		Delayed:       Delayed{5 * time.Second, 6 * time.Minute, 8, 2},
		Qualification: Qualification{7 * time.Hour},
		Admin:         Admin{Addr: "127.0.0.1:1"},
		Log:           Log{"debug", "console"},
		Partners: map[string]Partner{"net": {
			Goals:        map[postback.Goal]GoalConfig{postback.GoalReg: {URL: "https://t.example/r?c={click_id}", Alias: "signup"}},
			AllowedHosts: []string{"t.example"},
			Timeout:      9 * time.Second,
			Retry:        RetryPolicy{2, 10 * time.Millisecond, 20 * time.Millisecond, time.Minute, 2 * time.Minute, 3 * time.Hour},
			RateLimit:    RateLimit{2.5, 4},
			Success:      SuccessRule{[]int{200}, "^OK"},
			Breaker:      Breaker{3, time.Minute},
			StatusWords:  map[string]string{"pending": "pending", "approved": "1", "rejected": "rejected"},
		}},
		Merchants: map[string]Merchant{"m1": {DefaultPartner: "net", Deal: "hybrid", RevsharePercent: decimal.RequireFromString("35.5")}},
	}
	if !cfg.Merchants["m1"].RevsharePercent.Equal(want.Merchants["m1"].RevsharePercent) {
		t.Errorf("revshare_percent = %s, want 35.5", cfg.Merchants["m1"].RevsharePercent)
	}
	if w := cfg.Merchants["m1"].AttributionWait; w == nil || *w != 0 {
		t.Errorf("attribution_wait = %v, want an explicit 0 kept", w)
	}
	// decimal.Decimal compares by value, not by reflect.DeepEqual.
	cfg.Merchants["m1"] = want.Merchants["m1"]
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("loaded config differs from the YAML:\n got %+v\nwant %+v", *cfg, want)
	}
	if p.Goals[postback.GoalReg].Alias != "signup" {
		t.Errorf("alias = %q, want signup", p.Goals[postback.GoalReg].Alias)
	}
}

func TestSetDefaultsTwiceChangesNothing(t *testing.T) {
	once := validConfig()
	twice := validConfig()
	twice.SetDefaults()
	if !reflect.DeepEqual(once, twice) {
		t.Fatalf("second SetDefaults changed the config:\n%+v\n%+v", once, twice)
	}
}

func TestSetDefaultsBurstFollowsRate(t *testing.T) {
	tests := []struct {
		perSecond float64
		burst     int
		want      int
	}{
		{0, 0, 1},
		{0.5, 0, 1},
		{50, 0, 50},
		{50, 5, 5},
	}
	for _, tt := range tests {
		p := Partner{RateLimit: RateLimit{PerSecond: tt.perSecond, Burst: tt.burst}}
		p.setDefaults()
		if p.RateLimit.Burst != tt.want {
			t.Errorf("per_second %g burst %d: burst = %d, want %d", tt.perSecond, tt.burst, p.RateLimit.Burst, tt.want)
		}
	}
}

func TestLoadEnvOverrides(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		got  func(c *Config) any
		want any
	}{
		{"brokers list", map[string]string{"POSTBACKD_KAFKA_BROKERS": " a:1, b:2,,c:3 "}, func(c *Config) any { return c.Kafka.Brokers }, []string{"a:1", "b:2", "c:3"}},
		{"group id", map[string]string{"POSTBACKD_KAFKA_GROUP_ID": "blue"}, func(c *Config) any { return c.Kafka.GroupID }, "blue"},
		{"redis addrs with cluster", map[string]string{"POSTBACKD_REDIS_ADDRS": "r1:7001,r2:7002", "POSTBACKD_REDIS_CLUSTER": "true"},
			func(c *Config) any { return fmt.Sprint(c.Redis.Addrs, c.Redis.Cluster) }, "[r1:7001 r2:7002] true"},
		{"redis cluster off", map[string]string{"POSTBACKD_REDIS_CLUSTER": "0"}, func(c *Config) any { return c.Redis.Cluster }, false},
		{"admin addr", map[string]string{"POSTBACKD_ADMIN_ADDR": "127.0.0.1:9191"}, func(c *Config) any { return c.Admin.Addr }, "127.0.0.1:9191"},
		{"log level", map[string]string{"POSTBACKD_LOG_LEVEL": "debug"}, func(c *Config) any { return c.Log.Level }, "debug"},
		{"log format", map[string]string{"POSTBACKD_LOG_FORMAT": "console"}, func(c *Config) any { return c.Log.Format }, "console"},
		{"topic deposits", map[string]string{"POSTBACKD_TOPIC_DEPOSITS": "t.dep"}, func(c *Config) any { return c.Topics.Deposits }, "t.dep"},
		{"topic revenue", map[string]string{"POSTBACKD_TOPIC_REVENUE": "t.rev"}, func(c *Config) any { return c.Topics.Revenue }, "t.rev"},
		{"topic registrations", map[string]string{"POSTBACKD_TOPIC_REGISTRATIONS": "t.reg"}, func(c *Config) any { return c.Topics.Registrations }, "t.reg"},
		{"topic qualifications", map[string]string{"POSTBACKD_TOPIC_QUALIFICATIONS": "t.q"}, func(c *Config) any { return c.Topics.Qualifications }, "t.q"},
		{"topic dispatched", map[string]string{"POSTBACKD_TOPIC_DISPATCHED": "t.d"}, func(c *Config) any { return c.Topics.Dispatched }, "t.d"},
		{"topic confirmed", map[string]string{"POSTBACKD_TOPIC_CONFIRMED": "t.c"}, func(c *Config) any { return c.Topics.Confirmed }, "t.c"},
		{"topic dlq", map[string]string{"POSTBACKD_TOPIC_DLQ": "t.dlq"}, func(c *Config) any { return c.Topics.DLQ }, "t.dlq"},
		{"empty value is unset", map[string]string{"POSTBACKD_KAFKA_GROUP_ID": "  "}, func(c *Config) any { return c.Kafka.GroupID }, "from-yaml"},
	}
	yamlWithGroup := strings.Replace(minimalYAML, `brokers: ["kafka-1:9092"]`, "brokers: [\"kafka-1:9092\"]\n  group_id: from-yaml", 1)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{"NET_TOKEN": "tok"}
			for k, v := range tt.vars {
				vars[k] = v
			}
			cfg := mustLoad(t, yamlWithGroup, vars)
			if got := tt.got(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestLoadEnvOverrideProblems(t *testing.T) {
	_, err := loadString(t, minimalYAML, map[string]string{
		"NET_TOKEN":               "tok",
		"POSTBACKD_REDIS_CLUSTER": "yes please",
		"POSTBACKD_LOG_LEVEL":     "loud",
		"POSTBACKD_KAFKA_BROKERS": "nohostport",
	})
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Load() = %v, want a *ValidationError", err)
	}
	assertProblems(t, verr.Problems, []string{
		`POSTBACKD_REDIS_CLUSTER: (environment override of redis.cluster) want true or false, got "yes please"`,
		`kafka.brokers[0]: must be host:port, got "nohostport"`,
		`log.level: must be one of "debug", "info", "warn", "error", got "loud"`,
	})
}

func TestLoadSecrets(t *testing.T) {
	tests := []struct {
		name      string
		token     string // YAML of partners.net.token
		files     map[string]string
		vars      map[string]string
		wantValue string
		wantErr   []string
	}{
		{name: "from env", token: "{env: NET_TOKEN}", vars: map[string]string{"NET_TOKEN": "s3cr3t"}, wantValue: "s3cr3t"},
		{name: "env keeps spaces and newlines inside", token: "{env: NET_TOKEN}", vars: map[string]string{"NET_TOKEN": " a b\n"}, wantValue: " a b\n"},
		{name: "from file, trailing newline trimmed", token: "{file: secrets/net.token}", files: map[string]string{"secrets/net.token": "s3cr3t\r\n\n"}, wantValue: "s3cr3t"},
		{name: "from file without newline", token: "{file: net.token}", files: map[string]string{"net.token": "abc"}, wantValue: "abc"},
		{name: "env unset", token: "{env: NET_TOKEN}", wantErr: []string{"partners.net.token.env: environment variable NET_TOKEN is unset or empty"}},
		{name: "file missing is reported once", token: "{file: nope.token}", wantErr: []string{"partners.net.token.file: reading secret: open "}},
		{name: "file empty", token: "{file: net.token}", files: map[string]string{"net.token": "\n"}, wantErr: []string{"partners.net.token.file: secret file "}},
		{name: "both sources", token: "{env: NET_TOKEN, file: net.token}", files: map[string]string{"net.token": "x"}, vars: map[string]string{"NET_TOKEN": "y"},
			wantErr: []string{"partners.net.token: set exactly one of env and file"}},
		{name: "neither source", token: "{}", wantErr: []string{"partners.net.token: required because a goal URL uses {token}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				writeFile(t, dir, name, content)
			}
			content := strings.Replace(minimalYAML, "token: {env: NET_TOKEN}", "token: "+tt.token, 1)
			cfg, err := Load(writeFile(t, dir, "postbackd.yaml", content), env(tt.vars))
			if tt.wantErr != nil {
				var verr *ValidationError
				if !errors.As(err, &verr) {
					t.Fatalf("Load() = %v, want a *ValidationError", err)
				}
				assertProblems(t, verr.Problems, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := cfg.Partners["net"].Token.Reveal(); got != tt.wantValue {
				t.Fatalf("token resolved to a value of %d bytes, want %d bytes", len(got), len(tt.wantValue))
			}
		})
	}
}

// TestLoadRelativePaths checks that relative file paths are taken from the
// config file's directory, not the process's.
func TestLoadRelativePaths(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "tls/ca.pem", "x")
	content := strings.Replace(minimalYAML, "kafka:\n", "kafka:\n  tls: {enabled: true, ca_file: tls/ca.pem}\n", 1)
	cfg, err := Load(writeFile(t, dir, "postbackd.yaml", content), env(map[string]string{"NET_TOKEN": "t"}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := filepath.Join(dir, "tls/ca.pem"); cfg.Kafka.TLS.CAFile != want {
		t.Fatalf("ca_file = %q, want %q", cfg.Kafka.TLS.CAFile, want)
	}
}

// TestLoadYAMLErrors: only what is not YAML at all, or a second document,
// stops Load alone; everything else is a problem listed with the others.
func TestLoadYAMLErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // fragments the error must contain
	}{
		{"not YAML", "kafka:\n  brokers: [\"k:9092\"\n", []string{"line"}},
		{"tab indentation", "kafka:\n\tbrokers: []\n", []string{"line 2"}},
		{"second document", minimalYAML + "---\nkafka: {}\n", []string{"second YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadString(t, tt.content, map[string]string{"NET_TOKEN": "tok"})
			if err == nil {
				t.Fatal("Load() succeeded, want an error")
			}
			var verr *ValidationError
			if errors.As(err, &verr) {
				t.Fatalf("Load() = validation error %v, want a YAML error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestLoadKeyAndTypeProblems: a misspelt key or a value of the wrong type is
// reported under its key path, in words, with its line and the nearest valid
// key, among every other problem rather than alone.
func TestLoadKeyAndTypeProblems(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // "path: fragment", every problem in order
	}{
		{"misspelt top-level key", strings.Replace(minimalYAML, "redis:", "rediss:", 1), []string{
			`redis.addrs: at least one address`,
			`rediss: unknown key; did you mean "redis"? (line 4)`,
		}},
		{"misspelt nested key", strings.Replace(minimalYAML, "    allowed_hosts:", "    retry: {quick_atempts: 2}\n    allowed_hosts:", 1), []string{
			`partners.net.retry.quick_atempts: unknown key; did you mean "quick_attempts"? (line 8)`,
		}},
		{"transposed letters", strings.Replace(minimalYAML, "    allowed_hosts:", "    tiemout: 5s\n    allowed_hosts:", 1), []string{
			`partners.net.tiemout: unknown key; did you mean "timeout"? (line 8)`,
		}},
		{"wrong case", strings.Replace(minimalYAML, "  brokers:", "  Brokers:", 1), []string{
			`kafka.Brokers: unknown key; did you mean "brokers"?`,
			`kafka.brokers: at least one broker`,
		}},
		{"last word of a key", strings.Replace(minimalYAML, "  addrs:", "  ttl: 1h\n  addrs:", 1), []string{
			`redis.ttl: unknown key; did you mean "record_ttl"?`,
		}},
		{"nothing near", strings.Replace(minimalYAML, "  addrs:", "  zzzzzz: 1\n  addrs:", 1), []string{
			`redis.zzzzzz: unknown key; valid keys here: addrs, cluster, username, password, db, tls, pool_size, key_prefix, record_ttl, allow_eviction`,
		}},
		{"key set twice", strings.Replace(minimalYAML, "  addrs:", "  db: 1\n  db: 2\n  addrs:", 1), []string{
			`redis.db: set twice, here and on line 5; keep one (line 6)`,
		}},
		{"number for a list", strings.Replace(minimalYAML, `brokers: ["kafka-1:9092"]`, "brokers: 9092", 1), []string{
			`kafka.brokers: want a list of strings, got a number (write a list of one item as [item]) (line 3)`,
		}},
		{"string for a whole number", minimalYAML + "consumer:\n  max_in_flight: lots\n", []string{
			`consumer.max_in_flight: want a whole number, got a string ("lots") (line 17)`,
		}},
		{"fraction for a whole number", minimalYAML + "consumer:\n  max_in_flight: 2.5\n", []string{
			`consumer.max_in_flight: want a whole number, got a number (2.5)`,
		}},
		{"bad duration", minimalYAML + "consumer:\n  commit_interval: 5 minutes\n", []string{
			`consumer.commit_interval: want a duration such as 500ms, 30s or 2h, got a string ("5 minutes") (line 17)`,
		}},
		{"number for a duration", minimalYAML + "consumer:\n  commit_interval: 5\n", []string{
			`consumer.commit_interval: want a duration such as 500ms, 30s or 2h, got a number (5)`,
		}},
		{"bad bool", minimalYAML + "admin:\n  disabled: maybe\n", []string{
			`admin.disabled: want true or false, got a string ("maybe")`,
		}},
		{"bad decimal", minimalYAML + "    revshare_percent: ten\n", []string{
			`merchants.m1.revshare_percent: want a decimal number, got a string ("ten") (line 16)`,
		}},
		{"list for a section", minimalYAML + "consumer: [1, 2]\n", []string{
			`consumer: want a mapping of keys (key: value), got a list (line 16)`,
		}},
		{"misspelt section beside validation problems", strings.Replace(minimalYAML, "merchants:\n  m1:\n    default_partner: net\n", "", 1) + "log: {level: loud}\npartners2: 1\n", []string{
			`log.level: must be one of`,
			`merchants: at least one merchant is required`,
			`partners2: unknown key; did you mean "partners"?`,
		}},
		{"bad list item", strings.Replace(minimalYAML, `brokers: ["kafka-1:9092"]`, `brokers: ["kafka-1:9092", {host: k}]`, 1), []string{
			`kafka.brokers[1]: want a string, got a mapping (line 3)`,
		}},
		{"bad status item", strings.Replace(minimalYAML, "    allowed_hosts:", "    success: {statuses: [200, ok]}\n    allowed_hosts:", 1), []string{
			`partners.net.success.statuses[1]: want a whole number, got a string ("ok")`,
		}},
		{"goal is a string", strings.Replace(minimalYAML, "    goals:\n      ftd:\n", "    goals:\n      reg: https://t.example/r\n      ftd:\n", 1), []string{
			`partners.net.goals.reg: want a mapping of keys (key: value), got a string`,
		}},
		{"a partner of the wrong type still exists", strings.Replace(minimalYAML, "partners:\n", "partners:\n  other: [1]\n", 1) + "    deal: hybrid\n  m2: {default_partner: other}\n", []string{
			`partners.other: want a mapping of keys (key: value), got a list (line 7)`,
		}},
		{"a secret put where a section goes is not shown", strings.Replace(minimalYAML, "kafka:\n", "kafka:\n  sasl: Yy7-secret-Uu\n", 1), []string{
			`kafka.sasl: want a mapping of keys (key: value), got a string (line 3)`,
		}},
		{"merge key twice", strings.Replace(minimalYAML, "merchants:\n  m1:\n    default_partner: net\n",
			"merchants:\n  m1: &m\n    default_partner: net\n  m2:\n    <<: *m\n    <<: *m\n", 1), []string{
			`merchants.m2.<<: set twice, here and on line 17; keep one (line 18)`,
		}},
		{"merge of a number", strings.Replace(minimalYAML, "    default_partner: net\n", "    default_partner: net\n    <<: [1, 2]\n", 1), []string{
			`merchants.m1.<<: a merge key takes a mapping or a list of them, got a number (line 16)`,
		}},
		{"the document is a list", "- a\n- b\n", []string{
			`config: want a mapping of keys (key: value), got a list (line 1)`,
		}},
		{"unknown keys and type errors beside validation problems", minimalYAML + "rediss: {}\nconsumer: {max_in_flight: lots, start_offset: newest}\nlog: {level: loud}\n", []string{
			`consumer.max_in_flight: want a whole number`,
			`consumer.start_offset: must be one of "earliest", "latest", got "newest"`,
			`log.level: must be one of`,
			`rediss: unknown key; did you mean "redis"?`,
		}},
		{"anchors and merge keys are followed", strings.Replace(minimalYAML, "merchants:\n  m1:\n    default_partner: net\n",
			"merchants:\n  m1: &m\n    default_partner: net\n    deel: cpa\n  m2:\n    <<: *m\n    deal: hybrid\n", 1), []string{
			`merchants.m1.deel: unknown key; did you mean "deal"? (line 16)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadString(t, tt.content, map[string]string{"NET_TOKEN": "tok"})
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Load() = %v, want a *ValidationError", err)
			}
			assertProblems(t, verr.Problems, tt.want)
			if strings.Contains(err.Error(), "config.") || strings.Contains(err.Error(), "!!") {
				t.Errorf("error names a Go type or YAML tag: %v", err)
			}
		})
	}
}

// TestLoadKeepsMergedValues: a value cut out of an anchor is cut out of every
// alias of it, and the valid rest is decoded into each.
func TestLoadKeepsMergedValues(t *testing.T) {
	content := strings.Replace(minimalYAML, "merchants:\n  m1:\n    default_partner: net\n",
		"merchants:\n  m1: &m\n    default_partner: net\n    deal: hybrid\n    revshare_percent: 35\n  m2:\n    <<: *m\n    deal: cpa\n", 1)
	cfg := mustLoad(t, content, map[string]string{"NET_TOKEN": "tok"})
	m1, m2 := cfg.Merchants["m1"], cfg.Merchants["m2"]
	if m1.Deal != "hybrid" || m2.Deal != "cpa" || m2.DefaultPartner != "net" || !m2.RevsharePercent.Equal(decimal.NewFromInt(35)) {
		t.Fatalf("merged merchants: m1 %+v, m2 %+v", m1, m2)
	}
}

// TestLoadNeverPrintsInlineSecrets: a secret written inline, where a
// SecretRef goes, is reported without its value or any prefix of it, and
// says how to write it instead.
func TestLoadNeverPrintsInlineSecrets(t *testing.T) {
	tests := []struct {
		name   string
		secret string // the secret, as it must never appear
		yaml   string // where it is written
		path   string
		want   string // message fragment
	}{
		{"partner token", "12345abcdef", "token: 12345abcdef", "partners.net.token", "use {env: VARIABLE} or {file: PATH}"},
		{"partner token quoted", "Zq8-xW3!vT5pL", `token: "Zq8-xW3!vT5pL"`, "partners.net.token", "{env: VARIABLE} or {file: PATH}"},
		{"partner token as a number", "9876543210123", "token: 9876543210123", "partners.net.token", "{env: VARIABLE} or {file: PATH}"},
		{"partner token as a block", "Kx7mRr2pQ9wz", "token: |\n      Kx7mRr2pQ9wz", "partners.net.token", "{env: VARIABLE} or {file: PATH}"},
		{"partner token in a list", "Hq4nVv8sLm2", "token: [Hq4nVv8sLm2]", "partners.net.token", "want {env: VARIABLE} or {file: PATH}, got a list"},
		{"partner token under an unknown key", "Pb5tYy7dWq3", "token: {value: Pb5tYy7dWq3}", "partners.net.token.value", "never the secret itself"},
		{"partner token under a misspelt key", "Jd2kNn6cXz9", "token: {evn: Jd2kNn6cXz9}", "partners.net.token.evn", `did you mean "env"?`},
		{"partner token in env", "12345abcdef", "token: {env: 12345abcdef}", "partners.net.token.env", "never the secret itself"},
		{"partner token in env, a valid name", "abcd1234efgh", "token: {env: abcd1234efgh}", "partners.net.token.env", "unset or empty (the name is not shown"},
		{"redis password", "hunter2hunter2", "redis:\n  password: hunter2hunter2", "redis.password", "{env: VARIABLE} or {file: PATH}"},
		{"kafka sasl password", "Mm3sasl9Qq", "kafka:\n  sasl: {mechanism: plain, username: u, password: Mm3sasl9Qq}", "kafka.sasl.password", "{env: VARIABLE} or {file: PATH}"},
		{"misspelt secret key", "Ww4pass5Ee", "redis:\n  pasword: Ww4pass5Ee", "redis.pasword", `did you mean "password"?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := minimalYAML
			if strings.HasPrefix(tt.yaml, "token:") {
				content = strings.Replace(content, "token: {env: NET_TOKEN}", tt.yaml, 1)
			} else {
				section, rest, _ := strings.Cut(tt.yaml, "\n")
				content = strings.Replace(content, section+"\n", tt.yaml+"\n", 1)
				_ = rest
			}
			_, err := loadString(t, content, map[string]string{"NET_TOKEN": "tok"})
			if err == nil {
				t.Fatal("Load() succeeded, want an error")
			}
			msg := err.Error()
			for n := 4; n <= len(tt.secret); n++ {
				if strings.Contains(msg, tt.secret[:n]) {
					t.Fatalf("error shows %q, a prefix of the secret:\n%s", tt.secret[:n], msg)
				}
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Load() = %v, want a *ValidationError", err)
			}
			found := false
			for _, p := range verr.Problems {
				if strings.HasPrefix(p, tt.path+": ") && strings.Contains(p, tt.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem %q containing %q:\n%s", tt.path, tt.want, msg)
			}
		})
	}
}

// TestLoadRevsharePercent: absent is 100; an explicit 0 (however written) is
// an error, never 100; any other value is kept.
func TestLoadRevsharePercent(t *testing.T) {
	for _, zero := range []string{"0", "0.0", `"0"`, "-0", "0e3"} {
		t.Run("explicit "+zero, func(t *testing.T) {
			_, err := loadString(t, minimalYAML+"    revshare_percent: "+zero+"\n", map[string]string{"NET_TOKEN": "tok"})
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Load() = %v, want a *ValidationError", err)
			}
			assertProblems(t, verr.Problems, []string{
				"merchants.m1.revshare_percent: 0 would send no revshare; omit the key for the default 100, or give a percentage in (0, 1000] (line 16)",
			})
		})
	}
	for value, want := range map[string]string{"": "100", "35": "35", "0.5": "0.5", "100": "100", "1000": "1000"} {
		t.Run("value "+value, func(t *testing.T) {
			content := minimalYAML
			if value != "" {
				content += "    revshare_percent: " + value + "\n"
			}
			cfg := mustLoad(t, content, map[string]string{"NET_TOKEN": "tok"})
			if got := cfg.Merchants["m1"].RevsharePercent; !got.Equal(decimal.RequireFromString(want)) {
				t.Fatalf("revshare_percent = %s, want %s", got, want)
			}
		})
	}
}

// TestDecoderProblem: should the decoder refuse what the check let
// through, its message is reported under the key path of its line, without
// the value it quotes.
func TestDecoderProblem(t *testing.T) {
	c := newYAMLChecker()
	c.lines[9] = "partners.net.token"
	got := c.decoderProblem("line 9: cannot unmarshal !!str `12345ab...` into config.SecretRef")
	want := problem{"partners.net.token", "cannot unmarshal !!str (value not shown) into config.SecretRef (line 9)"}
	if got != want {
		t.Errorf("decoderProblem = %+v, want %+v", got, want)
	}
	if got := c.decoderProblem("line 3: something"); got.path != "config" {
		t.Errorf("a line of no known key gives path %q, want config", got.path)
	}
}

func TestSuggestKey(t *testing.T) {
	names := []string{"addrs", "cluster", "username", "password", "db", "tls", "pool_size", "key_prefix", "record_ttl"}
	tests := map[string]string{
		"addr": "addrs", "adrs": "addrs", "clsuter": "cluster", "user_name": "username", "Password": "password",
		"passwd": "password", "pwd": "", "dv": "db", "ttl": "record_ttl", "prefix": "key_prefix", "pool": "pool_size", "x": "", "qqqqq": "",
	}
	for key, want := range tests {
		if got := suggestKey(key, names); got != want {
			t.Errorf("suggestKey(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load() = %v, want an error wrapping os.ErrNotExist", err)
	}
}

func TestLoadEmptyFileReportsWhatIsMissing(t *testing.T) {
	_, err := loadString(t, "", nil)
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Load() = %v, want a *ValidationError", err)
	}
	assertProblems(t, verr.Problems, []string{
		"kafka.brokers: at least one broker",
		"merchants: at least one merchant",
		"partners: at least one partner",
		"redis.addrs: at least one address",
	})
}

// TestExamplesLoad loads every file of examples/ as a deployment would, with
// the secrets each one needs put in place.
func TestExamplesLoad(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d example configs, want at least 3", len(files))
	}
	vars := map[string]string{"SCALEO_TOKEN": "scaleo-test-token"}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			// Copy into a temp dir so a relative secret file can be provided
			// next to it without writing into the repository.
			dir := t.TempDir()
			writeFile(t, dir, "secrets/datingnet.token", "datingnet-test-token\n")
			cfg, err := Load(writeFile(t, dir, filepath.Base(file), string(raw)), env(vars))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(cfg.Partners) == 0 || len(cfg.Merchants) == 0 {
				t.Fatalf("example has %d partners and %d merchants", len(cfg.Partners), len(cfg.Merchants))
			}
		})
	}
}

// TestExampleDetails pins what the examples promise in their comments.
func TestExampleDetails(t *testing.T) {
	load := func(name string) *Config {
		raw, err := os.ReadFile(filepath.Join("../examples", name))
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		writeFile(t, dir, "secrets/datingnet.token", "datingnet-test-token\n")
		cfg, err := Load(writeFile(t, dir, name, string(raw)), env(map[string]string{"SCALEO_TOKEN": "scaleo-test-token"}))
		if err != nil {
			t.Fatalf("Load %s: %v", name, err)
		}
		return cfg
	}

	scaleo := load("scaleo.yaml").Partners["scaleo"]
	if got := scaleo.Goals[postback.GoalFTDStatus].Alias; got != scaleo.Goals[postback.GoalFTD].Alias {
		t.Errorf("scaleo: ftd_status alias %q must equal the ftd alias so conv-change finds the FTD", got)
	}
	for g, want := range map[postback.Goal]string{postback.GoalFTD: "/track/conv?", postback.GoalFTDStatus: "/track/conv-change?", postback.GoalRD: "/track/conv?"} {
		if !strings.Contains(scaleo.Goals[g].URL, want) {
			t.Errorf("scaleo: %s url %q does not use %s", g, scaleo.Goals[g].URL, want)
		}
	}
	if scaleo.Token.Reveal() != "scaleo-test-token" {
		t.Error("scaleo: token not taken from SCALEO_TOKEN")
	}

	tracker := load("tracker-string.yaml")
	dn := tracker.Partners["datingnet"]
	if got, want := dn.TrackerString.Fields(), []string{"id", "affid", "transid", "clickid", "extra"}; !reflect.DeepEqual(got, want) {
		t.Errorf("datingnet tracker fields = %v, want %v", got, want)
	}
	if dn.Token.Reveal() != "datingnet-test-token" {
		t.Error("datingnet: token not read from its file")
	}
	first := dn.Goals[postback.GoalReg].URL
	for g, gc := range dn.Goals {
		if gc.URL != first {
			t.Errorf("datingnet: goal %s has its own URL; one URL serves every goal", g)
		}
	}
	if got := dn.Goals[postback.GoalFTD].Alias; got != "signup" {
		t.Errorf("datingnet: ftd alias = %q, want signup", got)
	}
	if got := dn.Goals[postback.GoalRD].Alias; got != "rebill" {
		t.Errorf("datingnet: rdep alias = %q, want rebill", got)
	}

	local := load("local.yaml")
	if local.Kafka.Brokers[0] != "127.0.0.1:19092" || local.Redis.Addrs[0] != "127.0.0.1:16379" {
		t.Errorf("local: brokers %v redis %v, want the scripts' ports 19092 and 16379", local.Kafka.Brokers, local.Redis.Addrs)
	}
}

// TestManyMistakesGolden loads a configuration with a mistake in nearly
// every section and compares the whole report with a golden file: every
// problem must be there, each under its key path, sorted.
func TestManyMistakesGolden(t *testing.T) {
	_, err := Load("testdata/many-mistakes.yaml", env(map[string]string{
		"POSTBACKD_REDIS_CLUSTER": "maybe",
		"EMPTY_TOKEN":             "",
	}))
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Load() = %v, want a *ValidationError", err)
	}
	got := strings.Join(verr.Problems, "\n") + "\n"
	// Whatever the golden file says, each kind of mistake must be in the
	// one report: unknown keys, type errors, the inline secret (never its
	// value) and validation problems together.
	for _, want := range []string{
		"qualificaton: unknown key; did you mean \"qualification\"?",
		"partners.scaleo.tiemout: unknown key; did you mean \"timeout\"?",
		"consumer.max_in_flight: want a whole number",
		"delayed.batch: want a whole number, got a list",
		"kafka.sasl.password: a secret is never written in the config",
		"merchants.poker.revshare_percent: 0 would send no revshare",
		"merchants.casino.revshare_percent: must be in (0, 1000], got 1500",
		"redis.record_ttl: must be a positive duration",
		"POSTBACKD_REDIS_CLUSTER:",
	} {
		if !strings.Contains(got, "\n"+want) && !strings.HasPrefix(got, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(got, "hunt") {
		t.Error("the report shows the inline secret")
	}
	golden := "testdata/many-mistakes.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./config -run ManyMistakes -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("problems differ from %s (rerun with -update after checking):\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

// TestSecretsNeverPrinted loads a config whose every secret is set and checks
// that no way of printing or marshalling it shows one.
func TestSecretsNeverPrinted(t *testing.T) {
	const (
		tokenSecret = "tok-SECRET-1"
		saslSecret  = "sasl-SECRET-2"
		redisSecret = "redis-SECRET-3"
	)
	dir := t.TempDir()
	writeFile(t, dir, "redis.pw", redisSecret+"\n")
	content := strings.Replace(minimalYAML, "kafka:\n", "kafka:\n  sasl: {mechanism: scram-sha-256, username: svc, password: {env: SASL_PW}}\n", 1)
	content = strings.Replace(content, "redis:\n", "redis:\n  password: {file: redis.pw}\n", 1)
	cfg, err := Load(writeFile(t, dir, "postbackd.yaml", content), env(map[string]string{"NET_TOKEN": tokenSecret, "SASL_PW": saslSecret}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// The secrets must be there to be hidden; otherwise this test proves nothing.
	if cfg.Partners["net"].Token.Reveal() != tokenSecret || cfg.Kafka.SASL.Password.Reveal() != saslSecret || cfg.Redis.Password.Reveal() != redisSecret {
		t.Fatal("secrets were not resolved")
	}

	yamlOut, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	jsonOut, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":              fmt.Sprintf("%v", cfg),
		"%+v":             fmt.Sprintf("%+v", cfg),
		"%#v":             fmt.Sprintf("%#v", cfg),
		"%v of value":     fmt.Sprintf("%v", *cfg),
		"%+v of value":    fmt.Sprintf("%+v", *cfg),
		"%#v of value":    fmt.Sprintf("%#v", *cfg),
		"%+v of partners": fmt.Sprintf("%+v", cfg.Partners),
		"%#v of partner":  fmt.Sprintf("%#v", cfg.Partners["net"]),
		"%q of token":     fmt.Sprintf("%q", cfg.Partners["net"].Token),
		"%x of token":     fmt.Sprintf("%x", cfg.Partners["net"].Token),
		"String":          cfg.Partners["net"].Token.String(),
		"yaml":            string(yamlOut),
		"json":            string(jsonOut),
	}
	for how, out := range outputs {
		for _, secret := range []string{tokenSecret, saslSecret, redisSecret} {
			if strings.Contains(out, secret) {
				t.Errorf("%s output contains a secret", how)
			}
		}
	}
	if !strings.Contains(outputs["%+v"], "[REDACTED]") {
		t.Errorf("%%+v output does not show the redaction marker")
	}
	// Marshalled output keeps where secrets come from, so it can be read back.
	var back Config
	if err := yaml.Unmarshal(yamlOut, &back); err != nil {
		t.Fatalf("yaml output does not read back: %v", err)
	}
	if back.Partners["net"].Token.Env != "NET_TOKEN" || back.Redis.Password.File == "" {
		t.Errorf("yaml output lost the secret references: %+v", back.Partners["net"].Token)
	}
}
