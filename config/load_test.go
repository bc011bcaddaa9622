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
		{"consumer.max_in_flight", cfg.Consumer.MaxInFlight, 4096},
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
consumer: {max_in_flight: 9, commit_interval: 1s, drain_timeout: 2s, session_timeout: 3s, rebalance_timeout: 4s, start_offset: latest}
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
		Consumer:      Consumer{9, time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second, "latest"},
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

func TestLoadYAMLErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // fragments the error must contain
	}{
		{"misspelt key names its line", "kafka:\n  brokers: [\"k:9092\"]\n  brokrs: [\"k:9092\"]\n", []string{"line 3", "field brokrs not found"}},
		{"misspelt nested key", strings.Replace(minimalYAML, "    allowed_hosts:", "    retry: {quick_atempts: 2}\n    allowed_hosts:", 1), []string{"line 8", "field quick_atempts not found"}},
		{"inline secret value is unknown", strings.Replace(minimalYAML, "{env: NET_TOKEN}", "{value: hunter2}", 1), []string{"field value not found"}},
		{"wrong type", "consumer:\n  max_in_flight: lots\n", []string{"line 2", "cannot unmarshal"}},
		{"bad duration", "consumer:\n  commit_interval: 5 minutes\n", []string{"line 2"}},
		{"bad decimal", minimalYAML + "    revshare_percent: ten\n", []string{"line 16", "merchants.m1.revshare_percent", `"ten" is not a decimal`}},
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
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks the inline secret: %q", err)
			}
		})
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
