package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/postbackd/postbackd/internal/urltemplate"
	"github.com/postbackd/postbackd/postback"
)

// ValidationError lists every problem of a configuration, each as
// "key.path: what is wrong", sorted by key path.
type ValidationError struct {
	Problems []string
}

// Error lists the problems one per line under a header line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config: %d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString(":")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p)
	}
	return b.String()
}

type problem struct {
	path string
	msg  string
}

func newValidationError(ps []problem) *ValidationError {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].path != ps[j].path {
			return ps[i].path < ps[j].path
		}
		return ps[i].msg < ps[j].msg
	})
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.path + ": " + p.msg
	}
	return &ValidationError{Problems: out}
}

// Validate checks the whole configuration and returns a *ValidationError
// naming every problem, or nil. It expects defaults to be filled (Load calls
// SetDefaults first): a zero duration or count is reported as a problem, not
// defaulted. It reads the file system only to check that TLS files exist.
func (c *Config) Validate() error {
	if ps := c.problems(nil); len(ps) > 0 {
		return newValidationError(ps)
	}
	return nil
}

// validator collects problems under key paths.
type validator struct {
	problems []problem
	// unresolved holds SecretRef paths whose source could not be read;
	// their emptiness is already reported.
	unresolved map[string]bool
}

func (v *validator) add(path, format string, args ...any) {
	v.problems = append(v.problems, problem{path, fmt.Sprintf(format, args...)})
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.add(path, "must be a positive duration, got %s", d)
	}
}

func (v *validator) positiveInt(path string, n int) {
	if n <= 0 {
		v.add(path, "must be positive, got %d", n)
	}
}

func (v *validator) oneOf(path, got string, allowed ...string) {
	for _, a := range allowed {
		if got == a {
			return
		}
	}
	v.add(path, "must be one of %s, got %q", quoteList(allowed), got)
}

func (c *Config) problems(unresolved map[string]bool) []problem {
	v := &validator{unresolved: unresolved}
	c.validateKafka(v)
	c.validateRedis(v)
	c.validateTopics(v)
	c.validateRuntime(v)
	c.validatePartners(v)
	c.validateMerchants(v)
	c.validateHorizon(v)
	return v.problems
}

// Horizon is the longest time after an event was first handled that
// anything can still refer to its Redis records: a postback retried on the
// delayed path until the longest retry.max_age, a qualification waiting
// qualification.window for its deposit, and that deposit waiting the longest
// attribution_wait for its click's network. It names the keys that make it
// up. redis.record_ttl must exceed it by HorizonMargin, or a late retry,
// redelivery or release meets a forgotten answer, claim or route.
func (c *Config) Horizon() (time.Duration, []string) {
	var maxAge, wait time.Duration
	ageKey, waitKey := "", ""
	for _, name := range sortedKeys(c.Partners) {
		if a := c.Partners[name].Retry.MaxAge; a > maxAge {
			maxAge, ageKey = a, "partners."+name+".retry.max_age"
		}
	}
	for _, name := range sortedKeys(c.Merchants) {
		if w := c.Merchants[name].Wait(); w > wait {
			wait, waitKey = w, "merchants."+name+".attribution_wait"
		}
	}
	terms := []string{}
	if ageKey != "" {
		terms = append(terms, fmt.Sprintf("%s (%s)", ageKey, maxAge))
	}
	terms = append(terms, fmt.Sprintf("qualification.window (%s)", c.Qualification.Window))
	if waitKey != "" {
		terms = append(terms, fmt.Sprintf("%s (%s)", waitKey, wait))
	}
	return maxAge + c.Qualification.Window + wait, terms
}

func (c *Config) validateHorizon(v *validator) {
	if c.Redis.RecordTTL <= 0 {
		return // reported by validateRedis
	}
	h, terms := c.Horizon()
	if need := h + HorizonMargin; c.Redis.RecordTTL < need {
		v.add("redis.record_ttl", "%s is shorter than the longest time a record can still be needed, %s = %s + a margin of %s = %s",
			c.Redis.RecordTTL, strings.Join(terms, " + "), h, HorizonMargin, need)
	}
}

func (c *Config) validateKafka(v *validator) {
	k := c.Kafka
	if len(k.Brokers) == 0 {
		v.add("kafka.brokers", "at least one broker (host:port) is required")
	}
	for i, b := range k.Brokers {
		checkHostPort(v, fmt.Sprintf("kafka.brokers[%d]", i), b, true)
	}
	if k.GroupID == "" {
		v.add("kafka.group_id", "must not be empty")
	}
	if k.ClientID == "" {
		v.add("kafka.client_id", "must not be empty")
	}
	checkTLS(v, "kafka.tls", k.TLS)

	s := k.SASL
	v.oneOf("kafka.sasl.mechanism", s.Mechanism, "", SASLPlain, SASLScramSHA256, SASLScramSHA512)
	if s.Mechanism == "" {
		if s.Username != "" || s.Password.Env != "" || s.Password.File != "" {
			v.add("kafka.sasl.mechanism", "must be set when a username or password is given")
		}
	} else {
		if s.Username == "" {
			v.add("kafka.sasl.username", "required when mechanism is %s", s.Mechanism)
		}
		if s.Password.Env == "" && s.Password.File == "" && s.Password.Value == "" {
			v.add("kafka.sasl.password", "required when mechanism is %s; set env or file", s.Mechanism)
		}
	}
	checkSecret(v, "kafka.sasl.password", s.Password)
}

func (c *Config) validateRedis(v *validator) {
	r := c.Redis
	switch {
	case len(r.Addrs) == 0:
		v.add("redis.addrs", "at least one address (host:port) is required")
	case !r.Cluster && len(r.Addrs) > 1:
		v.add("redis.addrs", "a single node takes exactly one address, got %d; set redis.cluster for a Redis Cluster", len(r.Addrs))
	}
	for i, a := range r.Addrs {
		checkHostPort(v, fmt.Sprintf("redis.addrs[%d]", i), a, true)
	}
	if r.DB < 0 {
		v.add("redis.db", "must not be negative, got %d", r.DB)
	}
	if r.Cluster && r.DB != 0 {
		v.add("redis.db", "must be 0 with redis.cluster (Redis Cluster has only database 0), got %d", r.DB)
	}
	v.positiveInt("redis.pool_size", r.PoolSize)
	// The prefix is written outside the {…} hash tag of every key; a brace in
	// it would move the tag and split a click's keys across slots.
	if r.KeyPrefix == "" {
		v.add("redis.key_prefix", "must not be empty")
	} else if strings.ContainsAny(r.KeyPrefix, "{}") {
		v.add("redis.key_prefix", "must not contain '{' or '}' (they would change the keys' hash tag), got %q", r.KeyPrefix)
	}
	v.positive("redis.record_ttl", r.RecordTTL)
	checkTLS(v, "redis.tls", r.TLS)
	checkSecret(v, "redis.password", r.Password)
}

var topicNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func (c *Config) validateTopics(v *validator) {
	t := c.Topics
	topics := []struct{ key, name string }{
		{"deposits", t.Deposits},
		{"revenue", t.Revenue},
		{"registrations", t.Registrations},
		{"qualifications", t.Qualifications},
		{"dispatched", t.Dispatched},
		{"confirmed", t.Confirmed},
		{"dlq", t.DLQ},
	}
	seen := make(map[string]string)
	for _, tp := range topics {
		path := "topics." + tp.key
		switch {
		case tp.name == "":
			v.add(path, "must not be empty")
			continue
		case !topicNameRE.MatchString(tp.name) || tp.name == "." || tp.name == "..":
			v.add(path, "%q is not a valid Kafka topic name (letters, digits, '.', '_', '-'; at most 249)", tp.name)
		}
		if first, ok := seen[tp.name]; ok {
			v.add(path, "%q is already the name of topics.%s; every topic must be distinct", tp.name, first)
			continue
		}
		seen[tp.name] = tp.key
	}
}

func (c *Config) validateRuntime(v *validator) {
	cs := c.Consumer
	v.positiveInt("consumer.max_in_flight", cs.MaxInFlight)
	v.positive("consumer.commit_interval", cs.CommitInterval)
	v.positive("consumer.drain_timeout", cs.DrainTimeout)
	v.positive("consumer.session_timeout", cs.SessionTimeout)
	v.positive("consumer.rebalance_timeout", cs.RebalanceTimeout)
	v.oneOf("consumer.start_offset", cs.StartOffset, StartEarliest, StartLatest)
	if grace := c.CancelGrace(); cs.DrainTimeout > 0 && cs.RebalanceTimeout > 0 && cs.DrainTimeout+grace >= cs.RebalanceTimeout {
		v.add("consumer.rebalance_timeout",
			"%s must be longer than drain_timeout %s plus the cancel grace %s (the longest partners.*.timeout and a second, at least 2s): a stopping member sees its HTTP attempts in flight through, or a rebalance goes on without it",
			cs.RebalanceTimeout, cs.DrainTimeout, grace)
	}

	d := c.Delayed
	v.positive("delayed.poll_interval", d.PollInterval)
	v.positive("delayed.lease", d.Lease)
	v.positiveInt("delayed.batch", d.Batch)
	v.positiveInt("delayed.shards", d.Shards)

	v.positive("qualification.window", c.Qualification.Window)

	if !c.Admin.Disabled {
		checkHostPort(v, "admin.addr", c.Admin.Addr, false)
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "console")
}

func (c *Config) validatePartners(v *validator) {
	if len(c.Partners) == 0 {
		v.add("partners", "at least one partner is required")
	}
	for _, name := range sortedKeys(c.Partners) {
		c.validatePartner(v, name, c.Partners[name])
	}
}

// LeaseMargin is kept at both ends of a claim: between the end of a send
// (its deadline) and the end of the claim, for the delivered mark to reach
// Redis, and for the taker's own latency.
const LeaseMargin = 5 * time.Second

// ClaimLease is the one lease formula of postbackd: how long a postback to p
// is claimed for one in-place attempt — every quick try at its timeout plus
// the backoff after it (jitter stretches an interval to 1.5 × max_interval
// at most), plus LeaseMargin at each end. The pipeline bounds the send by it
// (so a claim cannot lapse mid-send and let a second worker send too), and a
// delayed job, which runs one such attempt, is leased at least as long
// (delayed.lease), so no second poller takes the job while its claim holds.
func (p Partner) ClaimLease() time.Duration {
	n := time.Duration(max(p.Retry.QuickAttempts, 1))
	return n*(p.Timeout+p.Retry.MaxInterval*3/2) + 2*LeaseMargin
}

func (c *Config) validatePartner(v *validator, name string, p Partner) {
	base := "partners." + name
	if name == "" {
		v.add("partners", "a partner name must not be empty")
	}

	// Tracker string first: the goal URLs' {tr.*} macros depend on it.
	checkTracker(v, base+".tracker_string", p.TrackerString)

	if len(p.AllowedHosts) == 0 {
		v.add(base+".allowed_hosts", "at least one host is required (postbacks go only to listed hosts)")
	}
	for i, h := range p.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/?#@ ") {
			v.add(fmt.Sprintf("%s.allowed_hosts[%d]", base, i), "must be a bare host name (optionally host:port), got %q", h)
		}
	}

	if len(p.Goals) == 0 {
		v.add(base+".goals", "at least one goal is required")
	}
	usesToken := false
	known := KnownMacro(p)
	goals := make([]string, 0, len(p.Goals))
	for g := range p.Goals {
		goals = append(goals, string(g))
	}
	sort.Strings(goals)
	for _, g := range goals {
		gc := p.Goals[postback.Goal(g)]
		path := base + ".goals." + g
		if !postback.Goal(g).Valid() {
			v.add(path, "unknown goal; want one of %s", goalList())
			continue
		}
		if gc.Alias == "" {
			v.add(path+".alias", "must not be empty")
		}
		macros := checkGoalURL(v, path+".url", gc.URL, known, p.AllowedHosts)
		for _, m := range macros {
			if m == "token" {
				usesToken = true
			}
		}
		if postback.Goal(g) == postback.GoalFTDStatus && macros != nil && !slices.Contains(macros, "conv_status") {
			v.add(path+".url", "must use {conv_status}: it is what tells approved from rejected")
		}
	}

	checkSecret(v, base+".token", p.Token)
	if usesToken && p.Token.Env == "" && p.Token.File == "" && p.Token.Value == "" {
		v.add(base+".token", "required because a goal URL uses {token}; set token.env or token.file")
	}

	v.positive(base+".timeout", p.Timeout)
	r := p.Retry
	v.positiveInt(base+".retry.quick_attempts", r.QuickAttempts)
	v.positive(base+".retry.initial_interval", r.InitialInterval)
	v.positive(base+".retry.max_interval", r.MaxInterval)
	v.positive(base+".retry.delayed_initial", r.DelayedInitial)
	v.positive(base+".retry.delayed_max", r.DelayedMax)
	v.positive(base+".retry.max_age", r.MaxAge)
	if r.InitialInterval > 0 && r.MaxInterval > 0 && r.InitialInterval > r.MaxInterval {
		v.add(base+".retry.initial_interval", "%s is longer than retry.max_interval %s", r.InitialInterval, r.MaxInterval)
	}
	if r.DelayedInitial > 0 && r.DelayedMax > 0 && r.DelayedInitial > r.DelayedMax {
		v.add(base+".retry.delayed_initial", "%s is longer than retry.delayed_max %s", r.DelayedInitial, r.DelayedMax)
	}
	if p.Timeout > 0 && r.QuickAttempts > 0 && c.Delayed.Lease > 0 && c.Delayed.Lease < p.ClaimLease() {
		v.add("delayed.lease", "%s is shorter than the claim lease of partner %s (%d × (timeout %s + 1.5 × retry.max_interval %s) + 2 × %s = %s): a delayed job must stay leased as long as the claim of the send it runs",
			c.Delayed.Lease, name, r.QuickAttempts, p.Timeout, r.MaxInterval, LeaseMargin, p.ClaimLease())
	}

	if p.RateLimit.PerSecond < 0 {
		v.add(base+".rate_limit.per_second", "must not be negative (0 means unlimited), got %g", p.RateLimit.PerSecond)
	}
	if p.RateLimit.Burst < 0 {
		v.add(base+".rate_limit.burst", "must not be negative, got %d", p.RateLimit.Burst)
	}

	if len(p.Success.Statuses) == 0 {
		v.add(base+".success.statuses", "at least one HTTP status is required")
	}
	for i, s := range p.Success.Statuses {
		if s < 100 || s > 599 {
			v.add(fmt.Sprintf("%s.success.statuses[%d]", base, i), "must be an HTTP status in 100..599, got %d", s)
		}
	}
	if p.Success.BodyPattern != "" {
		if _, err := regexp.Compile(p.Success.BodyPattern); err != nil {
			v.add(base+".success.body_pattern", "%v", err)
		}
	}

	v.positiveInt(base+".breaker.failures", p.Breaker.Failures)
	v.positive(base+".breaker.cooldown", p.Breaker.Cooldown)

	for _, k := range sortedKeys(p.StatusWords) {
		if !slices.Contains(statusKeys, k) {
			v.add(base+".status_words."+k, "unknown status; want one of %s", quoteList(statusKeys))
			continue
		}
		if p.StatusWords[k] == "" {
			v.add(base+".status_words."+k, "must not be empty")
		}
	}
}

// checkGoalURL parses a goal URL template, reports what is wrong with it and
// returns its macros (nil when it does not parse).
func checkGoalURL(v *validator, path, raw string, known func(string) bool, allowed []string) []string {
	if raw == "" {
		v.add(path, "must not be empty")
		return nil
	}
	// Parse for syntax with every name allowed, then name the unknown macros
	// ourselves: one message that lists them without repeating the URL.
	tpl, err := urltemplate.Parse(raw, func(string) bool { return true })
	if err != nil {
		v.add(path, "%v", err)
		return nil
	}
	macros := tpl.Macros()
	var unknown []string
	for _, m := range macros {
		if !known(m) && !slices.Contains(unknown, m) {
			unknown = append(unknown, m)
		}
	}
	if len(unknown) > 0 {
		v.add(path, "unknown macro(s) %s", strings.Join(unknown, ", "))
	}

	// The scheme and host must be literal: a macro there would let event data
	// choose where a postback (and its token) goes.
	schemeEnd := strings.Index(raw, "://")
	if schemeEnd < 0 {
		v.add(path, "must be an absolute http or https URL")
		return macros
	}
	authority := raw[schemeEnd+3:]
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	if strings.ContainsAny(raw[:schemeEnd], "{}") || strings.ContainsAny(authority, "{}") {
		v.add(path, "the scheme and host must be literal, not macros")
		return macros
	}
	u, err := url.Parse(tpl.Render(func(string) string { return "x" }))
	if err != nil {
		v.add(path, "not a valid URL: %v", err)
		return macros
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		v.add(path, "must be an absolute http or https URL, got scheme %q", u.Scheme)
	case u.Hostname() == "":
		v.add(path, "has no host")
	case u.User != nil:
		v.add(path, "must not carry user info; pass credentials with {token}")
	case !hostAllowed(u, allowed):
		v.add(path, "host %q is not in allowed_hosts", u.Host)
	}
	return macros
}

// hostAllowed reports whether u's host matches an entry of allowed, either
// as a bare host name (any port) or as host:port. Host names compare without
// case.
func hostAllowed(u *url.URL, allowed []string) bool {
	for _, a := range allowed {
		if strings.EqualFold(a, u.Hostname()) || strings.EqualFold(a, u.Host) {
			return true
		}
	}
	return false
}

func checkTracker(v *validator, path string, t TrackerString) {
	if t.Pattern == "" {
		if t.Param != "" {
			v.add(path+".pattern", "required when param is set")
		}
		return
	}
	if t.Param == "" {
		v.add(path+".param", "required when pattern is set (which params key holds the tracker string)")
	}
	tpl, err := urltemplate.Parse(t.Pattern, isIdentifier)
	if err != nil {
		v.add(path+".pattern", "%v (fields are identifiers: letters, digits, '_')", err)
		return
	}
	fields := tpl.Macros()
	if len(fields) == 0 {
		v.add(path+".pattern", "has no {field}")
	}
	seen := make(map[string]bool)
	for _, f := range fields {
		if seen[f] {
			v.add(path+".pattern", "field %q appears twice", f)
		}
		seen[f] = true
	}
	// Two fields with nothing between them cannot be told apart.
	if strings.Contains(t.Pattern, "}{") {
		v.add(path+".pattern", "two fields must be separated by literal text")
	}
}

func (c *Config) validateMerchants(v *validator) {
	if len(c.Merchants) == 0 {
		v.add("merchants", "at least one merchant is required")
	}
	for _, name := range sortedKeys(c.Merchants) {
		m := c.Merchants[name]
		base := "merchants." + name
		if name == "" {
			v.add("merchants", "a merchant id must not be empty")
		}
		switch _, ok := c.Partners[m.DefaultPartner]; {
		case m.DefaultPartner == "":
			// Optional: events routed by nothing else go to the DLQ.
		case !ok:
			v.add(base+".default_partner", "names no configured partner: %q (have %s)", m.DefaultPartner, quoteList(sortedKeys(c.Partners)))
		}
		v.oneOf(base+".deal", m.Deal, DealCPA, DealHybrid)
		switch w := m.Wait(); {
		case w < 0:
			v.add(base+".attribution_wait", "must not be negative (0 turns waiting off), got %s", w)
		case w >= c.Qualification.Window && c.Qualification.Window > 0:
			// A qualification of the waiting deposit would be dead-lettered
			// as an orphan before its FTD is even classified.
			v.add(base+".attribution_wait", "%s must be shorter than qualification.window (%s)", w, c.Qualification.Window)
		}
		if !m.RevsharePercent.IsPositive() || m.RevsharePercent.GreaterThan(MaxRevsharePercent) {
			v.add(base+".revshare_percent", "must be in (0, 1000], got %s", m.RevsharePercent)
		}
	}
}

// checkHostPort checks a host:port address. needHost is false for listen
// addresses, where ":9090" means every interface.
func checkHostPort(v *validator, path, addr string, needHost bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(path, "must be host:port, got %q", addr)
		return
	}
	if needHost && host == "" {
		v.add(path, "has no host: %q", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || (needHost && n == 0) {
		v.add(path, "has an invalid port: %q", addr)
	}
}

func checkTLS(v *validator, path string, t TLS) {
	files := []struct{ key, file string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}}
	for _, f := range files {
		if f.file == "" {
			continue
		}
		if !t.Enabled {
			v.add(path+"."+f.key, "set but tls.enabled is false; enable TLS or remove it")
		}
		if _, err := os.Stat(f.file); err != nil {
			v.add(path+"."+f.key, "%v", err)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add(path, "cert_file and key_file go together")
	}
}

// checkSecret reports a ref that names both sources, or names one that gave
// an empty value.
func checkSecret(v *validator, path string, s SecretRef) {
	switch {
	case s.Env != "" && s.File != "":
		v.add(path, "set exactly one of env and file")
	case v.unresolved[path]:
	case s.Env != "" && !envNameRE.MatchString(s.Env):
		v.add(path+".env", "is not the name of an environment variable (letters, digits and '_', not starting with a digit); "+
			"env names the variable that holds the secret, never the secret itself (the value is not shown)")
	case s.Env != "" && s.Value == "" && !plainEnvName(s.Env):
		v.add(path+".env", "the environment variable it names is unset or empty (the name is not shown, since it looks like it could be "+
			"the secret itself: env names the variable that holds the secret)")
	case s.Env != "" && s.Value == "":
		v.add(path+".env", "environment variable %s is unset or empty", s.Env)
	case s.File != "" && s.Value == "":
		v.add(path+".file", "secret file %s is empty", s.File)
	}
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// plainEnvName reports whether name looks like a variable's name rather
// than a secret pasted in its place: without digits (SCALEO_TOKEN,
// scaleo_token), or upper case words joined by '_' (TOKEN_2). Only such a
// name is shown in a message.
func plainEnvName(name string) bool {
	if !strings.ContainsAny(name, "0123456789") {
		return true
	}
	return name == strings.ToUpper(name) && strings.Contains(name, "_")
}

func goalList() string {
	names := make([]string, len(postback.Goals))
	for i, g := range postback.Goals {
		names[i] = string(g)
	}
	return strings.Join(names, ", ")
}

func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
