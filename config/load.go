package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"
	"go.yaml.in/yaml/v3"
)

// Load reads the YAML file at path and returns a configuration that is ready
// to use, or an error that says everything that is wrong with it.
//
// In order, Load:
//
//  1. decodes the YAML strictly: an unknown (misspelt) key is an error that
//     names its line;
//  2. applies the environment overrides below, read through getenv (nil
//     means an empty environment); an empty variable counts as unset;
//  3. makes relative file paths (secret files, TLS files) relative to the
//     directory of path, so a config and its files move together;
//  4. fills defaults (SetDefaults);
//  5. resolves secrets: SecretRef.Env through getenv, SecretRef.File by
//     reading the file and trimming trailing newlines;
//  6. validates (Validate).
//
// Every problem of steps 2, 5 and 6 is reported at once in a
// *ValidationError; a read or YAML error is returned alone, wrapped.
//
// Environment overrides (also in ENV.md). A list is comma separated, spaces
// around items are trimmed, and it replaces the YAML list rather than
// extending it:
//
//	variable                           key
//	POSTBACKD_KAFKA_BROKERS            kafka.brokers (list)
//	POSTBACKD_KAFKA_GROUP_ID           kafka.group_id
//	POSTBACKD_REDIS_ADDRS              redis.addrs (list)
//	POSTBACKD_REDIS_CLUSTER            redis.cluster (true/false, 1/0)
//	POSTBACKD_ADMIN_ADDR               admin.addr
//	POSTBACKD_LOG_LEVEL                log.level
//	POSTBACKD_LOG_FORMAT               log.format
//	POSTBACKD_TOPIC_DEPOSITS           topics.deposits
//	POSTBACKD_TOPIC_REVENUE            topics.revenue
//	POSTBACKD_TOPIC_REGISTRATIONS      topics.registrations
//	POSTBACKD_TOPIC_QUALIFICATIONS     topics.qualifications
//	POSTBACKD_TOPIC_DISPATCHED         topics.dispatched
//	POSTBACKD_TOPIC_CONFIRMED          topics.confirmed
//	POSTBACKD_TOPIC_DLQ                topics.dlq
func Load(path string, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := Parse(raw, filepath.Dir(path), getenv)
	var verr *ValidationError
	if err != nil && !errors.As(err, &verr) {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, err
}

// Parse is Load for a configuration held in memory (the demo and the load
// harness build theirs): the same steps, with relative file paths taken
// from dir.
func Parse(raw []byte, dir string, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	cfg, err := decode(raw)
	if err != nil {
		return nil, err
	}

	var problems []problem
	problems = append(problems, cfg.applyEnv(getenv)...)
	cfg.resolvePaths(dir)
	cfg.SetDefaults()
	resolveProblems, unresolved := cfg.resolveSecrets(getenv)
	problems = append(problems, resolveProblems...)
	problems = append(problems, cfg.problems(unresolved)...)
	if len(problems) > 0 {
		return nil, newValidationError(problems)
	}
	return cfg, nil
}

// decode parses exactly one YAML document into a Config, rejecting unknown
// keys. An empty document gives an empty Config (which then fails validation
// with useful messages rather than a parse error).
func decode(raw []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, err
	}
	if err := checkDecimals(&root); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	cfg := &Config{}
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("line %d: a second YAML document; the config is one document", extra.Line)
	}
	return cfg, nil
}

// checkDecimals reports a revshare_percent that is not a decimal number with
// its line: the YAML decoder hands such a value to decimal's UnmarshalText
// and returns its error without a position.
func checkDecimals(root *yaml.Node) error {
	doc := root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	merchants := mappingValue(doc, "merchants")
	if merchants == nil || merchants.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(merchants.Content); i += 2 {
		name, m := merchants.Content[i].Value, merchants.Content[i+1]
		v := mappingValue(m, "revshare_percent")
		if v == nil || v.Kind != yaml.ScalarNode {
			continue
		}
		if _, err := decimal.NewFromString(v.Value); err != nil {
			return fmt.Errorf("line %d: merchants.%s.revshare_percent: %q is not a decimal number", v.Line, name, v.Value)
		}
	}
	return nil
}

// mappingValue returns the value node of key in mapping node n, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// envOverride is one row of the override table. set reports a value it
// cannot use as an error; the caller names the variable.
type envOverride struct {
	name string
	key  string
	set  func(c *Config, v string) error
}

// envOverrides is the whole table, deliberately explicit: adding a variable
// means adding a row here, in Load's doc comment and in ENV.md (a test keeps
// ENV.md in step).
var envOverrides = []envOverride{
	{"POSTBACKD_KAFKA_BROKERS", "kafka.brokers", func(c *Config, v string) error { c.Kafka.Brokers = splitList(v); return nil }},
	{"POSTBACKD_KAFKA_GROUP_ID", "kafka.group_id", func(c *Config, v string) error { c.Kafka.GroupID = v; return nil }},
	{"POSTBACKD_REDIS_ADDRS", "redis.addrs", func(c *Config, v string) error { c.Redis.Addrs = splitList(v); return nil }},
	{"POSTBACKD_REDIS_CLUSTER", "redis.cluster", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		c.Redis.Cluster = b
		return nil
	}},
	{"POSTBACKD_ADMIN_ADDR", "admin.addr", func(c *Config, v string) error { c.Admin.Addr = v; return nil }},
	{"POSTBACKD_LOG_LEVEL", "log.level", func(c *Config, v string) error { c.Log.Level = v; return nil }},
	{"POSTBACKD_LOG_FORMAT", "log.format", func(c *Config, v string) error { c.Log.Format = v; return nil }},
	{"POSTBACKD_TOPIC_DEPOSITS", "topics.deposits", func(c *Config, v string) error { c.Topics.Deposits = v; return nil }},
	{"POSTBACKD_TOPIC_REVENUE", "topics.revenue", func(c *Config, v string) error { c.Topics.Revenue = v; return nil }},
	{"POSTBACKD_TOPIC_REGISTRATIONS", "topics.registrations", func(c *Config, v string) error { c.Topics.Registrations = v; return nil }},
	{"POSTBACKD_TOPIC_QUALIFICATIONS", "topics.qualifications", func(c *Config, v string) error { c.Topics.Qualifications = v; return nil }},
	{"POSTBACKD_TOPIC_DISPATCHED", "topics.dispatched", func(c *Config, v string) error { c.Topics.Dispatched = v; return nil }},
	{"POSTBACKD_TOPIC_CONFIRMED", "topics.confirmed", func(c *Config, v string) error { c.Topics.Confirmed = v; return nil }},
	{"POSTBACKD_TOPIC_DLQ", "topics.dlq", func(c *Config, v string) error { c.Topics.DLQ = v; return nil }},
}

func (c *Config) applyEnv(getenv func(string) string) []problem {
	var problems []problem
	for _, o := range envOverrides {
		v := strings.TrimSpace(getenv(o.name))
		if v == "" {
			continue
		}
		if err := o.set(c, v); err != nil {
			problems = append(problems, problem{o.name, fmt.Sprintf("(environment override of %s) %v", o.key, err)})
		}
	}
	return problems
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// resolvePaths makes every relative file path relative to dir.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for _, tls := range []*TLS{&c.Kafka.TLS, &c.Redis.TLS} {
		abs(&tls.CAFile)
		abs(&tls.CertFile)
		abs(&tls.KeyFile)
	}
	abs(&c.Kafka.SASL.Password.File)
	abs(&c.Redis.Password.File)
	for name, p := range c.Partners {
		abs(&p.Token.File)
		c.Partners[name] = p
	}
}

// resolveSecrets fills Value of every SecretRef that names exactly one
// source. It reports only what stopped a source from being read; an empty
// value and a ref naming both sources are Validate's business. unresolved
// holds the key path of each SecretRef whose file could not be read, so that
// Validate does not report it a second time as empty.
func (c *Config) resolveSecrets(getenv func(string) string) (problems []problem, unresolved map[string]bool) {
	unresolved = make(map[string]bool)
	resolve := func(path string, s *SecretRef) {
		switch {
		case s.Env != "" && s.File != "":
			return
		case s.Env != "":
			s.Value = getenv(s.Env)
		case s.File != "":
			b, err := os.ReadFile(s.File)
			if err != nil {
				problems = append(problems, problem{path + ".file", fmt.Sprintf("reading secret: %v", err)})
				unresolved[path] = true
				return
			}
			s.Value = strings.TrimRight(string(b), "\r\n")
		}
	}
	resolve("kafka.sasl.password", &c.Kafka.SASL.Password)
	resolve("redis.password", &c.Redis.Password)
	for name, p := range c.Partners {
		resolve("partners."+name+".token", &p.Token)
		c.Partners[name] = p
	}
	return problems, unresolved
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
