package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads the YAML file at path and returns a configuration that is ready
// to use, or an error that says everything that is wrong with it.
//
// In order, Load:
//
//  1. decodes the YAML, checking it against the keys and types of Config:
//     an unknown (misspelt) key is a problem that names the nearest valid
//     key, a value of the wrong type one that says in words what was
//     wanted, a secret written inline one that never shows it, an explicit
//     revshare_percent of 0 one too (absent means 100); each names its
//     line, and what does not fit is left out so that the rest is checked;
//  2. applies the environment overrides below, read through getenv (nil
//     means an empty environment); an empty variable counts as unset;
//  3. makes relative file paths (secret files, TLS files) relative to the
//     directory of path, so a config and its files move together;
//  4. fills defaults (SetDefaults);
//  5. resolves secrets: SecretRef.Env through getenv, SecretRef.File by
//     reading the file and trimming trailing newlines;
//  6. validates (Validate), leaving out what would only repeat a problem of
//     step 1 (a list cut out for its type is not also "required").
//
// Every problem of steps 1, 2, 5 and 6 is reported at once in a
// *ValidationError, sorted by key path; a read error, a document that is not
// YAML at all, or a second document is returned alone, wrapped.
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
	cfg, yc, err := decode(raw)
	if err != nil {
		return nil, err
	}

	problems := yc.problems
	problems = append(problems, cfg.applyEnv(getenv)...)
	cfg.resolvePaths(dir)
	cfg.SetDefaults()
	resolveProblems, unresolved := cfg.resolveSecrets(getenv)
	problems = append(problems, resolveProblems...)
	for _, p := range cfg.problems(unresolved) {
		// A value cut out for its type was replaced by its default or
		// nothing: what validation says of that is not news.
		if !yc.underBad(p.path) {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return nil, newValidationError(problems)
	}
	return cfg, nil
}

// decode parses exactly one YAML document into a Config. What in it does
// not fit Config (an unknown key, a value of the wrong type, a secret
// written inline, an explicit revshare_percent of 0) is returned as
// problems and left out, so that the rest is decoded and validated too; the
// checker's bad paths say which validation problems would only repeat them.
// An empty document gives an empty Config (which then fails validation with
// useful messages rather than a parse error). Only a document that does not
// parse as YAML, or a second document, is an error.
func decode(raw []byte) (*Config, *yamlChecker, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return &Config{}, newYAMLChecker(), nil
		}
		return nil, nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("line %d: a second YAML document; the config is one document", extra.Line)
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return &Config{}, newYAMLChecker(), nil
		}
		doc = doc.Content[0]
	}
	c := newYAMLChecker()
	cfg := &Config{}
	if !c.check(doc, reflect.TypeOf(*cfg), "") {
		return cfg, c, nil
	}
	if err := doc.Decode(cfg); err != nil {
		// The check should have cut out everything the decoder refuses;
		// should it not have, report the decoder's words (without the
		// values it quotes) with the rest rather than alone.
		var terr *yaml.TypeError
		if errors.As(err, &terr) {
			for _, msg := range terr.Errors {
				c.problems = append(c.problems, c.decoderProblem(msg))
			}
		} else {
			c.problems = append(c.problems, c.decoderProblem(err.Error()))
		}
	}
	return cfg, c, nil
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
