// Package dispatcher turns a postback.Postback into an HTTP GET to the
// partner's tracker and says what came of it.
//
// Contract:
//   - Send makes up to the partner's Retry.QuickAttempts HTTP attempts in
//     place, each with its own timeout, paced by the partner's rate limiter
//     and guarded by its circuit breaker. It never touches Redis or Kafka:
//     claiming the postback before the call, and scheduling the delayed retry
//     after a failure that is not Permanent, are the caller's.
//   - Success is what the partner says: a status in Success.Statuses and, if
//     set, a body matching Success.BodyPattern.
//   - Retried in place: network errors, timeouts, 408, 429 and 5xx (honouring
//     Retry-After). Permanent (never retried, not even on the delayed path):
//     any other status, a body-level refusal, a rendering problem (unknown
//     partner, goal not configured, host not allowed).
//   - Cancelling Send's context stops it from starting another attempt (and
//     ends a backoff or rate-limit wait); an attempt under way runs to its
//     answer or its deadline (the partner's Timeout, or the context's
//     deadline if nearer), and a success that arrives counts (client.go).
//   - The partner's token only ever leaves this package inside Rendered.URL
//     and the request itself. Result.URL, Rendered.Redacted, every error and
//     every log line carry the URL with the token replaced by [REDACTED].
//
// A Dispatcher is safe for concurrent use; one partner that is slow or
// failing does not hold up sends to another (each has its own limiter and
// breaker, and the HTTP client keeps connections per host).
package dispatcher

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/urltemplate"
	"github.com/postbackd/postbackd/metrics"
	"github.com/postbackd/postbackd/postback"
)

// Errors callers match with errors.Is. Every error Send or Render returns
// wraps at most one of them; the message adds the partner, the goal, the
// HTTP status and a capped body snippet, never the URL with the token.
var (
	// ErrUnknownPartner: the postback names a partner that is not configured.
	// Permanent.
	ErrUnknownPartner = errors.New("unknown partner")
	// ErrGoalNotConfigured: the partner does not take this goal. Permanent;
	// callers normally ask HasGoal first and audit the postback as skipped.
	ErrGoalNotConfigured = errors.New("goal not configured for partner")
	// ErrHostNotAllowed: the rendered URL's host is not in the partner's
	// AllowedHosts. Permanent.
	ErrHostNotAllowed = errors.New("host not allowed")
	// ErrBreakerOpen: the partner is failing and its circuit breaker is open;
	// no request was made. Not permanent: go straight to the delayed path
	// (Result.RetryAfter holds the rest of the cooldown).
	ErrBreakerOpen = errors.New("circuit breaker open")
	// ErrRefused: the partner answered, and the answer means "never": a
	// status that is neither success nor retryable, or a body that does not
	// match the success pattern. Permanent.
	ErrRefused = errors.New("refused by partner")
)

// defaultMaxAge applies to a partner that is not configured.
const defaultMaxAge = config.DefaultMaxAge

// defaultSuccessStatuses mirrors config's default (unexported there).
var defaultSuccessStatuses = []int{200, 201, 202, 204}

// Options are the Dispatcher's dependencies. Every field is optional.
type Options struct {
	// Logger gets retry and breaker events (never a token). Default: no-op.
	Logger *zap.Logger
	// Metrics records DispatchSeconds{partner} per attempt,
	// Retries{partner,"in_place"} and BreakerOpen{partner}. Default: a
	// private registry.
	Metrics *metrics.Metrics
	// Now is the clock for timestamps, Retry-After dates and the breaker's
	// cooldown. Default time.Now. Latency is always measured on the real
	// monotonic clock.
	Now func() time.Time
	// Version goes into the User-Agent "postbackd/<version>". Default "dev".
	Version string
}

// Dispatcher renders and sends postbacks. Create it with New.
type Dispatcher struct {
	partners  map[string]*partner
	client    *fasthttp.Client // see client.go
	log       *zap.Logger
	now       func() time.Time
	userAgent string
}

// partner is one partner's configuration, compiled once.
type partner struct {
	name    string
	cfg     config.Partner // with defaults filled
	goals   map[postback.Goal]goalTemplate
	allowed []allowedHost
	tracker *TrackerPattern
	token   string
	redact  *strings.Replacer // nil when there is no token
	success map[int]bool
	body    *regexp.Regexp
	limiter *rate.Limiter // nil = unlimited
	breaker *breaker

	dispatchSeconds prometheus.Observer
	retries         prometheus.Counter
}

type goalTemplate struct {
	tmpl        *urltemplate.Template
	alias       string
	usesTracker bool // some macro is tr.*: a tracker mismatch is worth a warning
}

// allowedHost is one AllowedHosts entry: a host, and a port when the entry
// names one (then the port must match too).
type allowedHost struct {
	host string // lower case, no brackets
	port string // "" = any port
}

// New compiles every partner: it parses each goal's URL template (unknown
// macros are errors), checks that each template's scheme and host are
// literal, http(s) and allowed, parses the tracker-string pattern and the
// success body pattern. It returns every problem at once, each prefixed with
// its key path (partners.<name>.…).
func New(partners map[string]config.Partner, opts Options) (*Dispatcher, error) {
	d := &Dispatcher{
		partners:  make(map[string]*partner, len(partners)),
		log:       opts.Logger,
		now:       opts.Now,
		userAgent: "postbackd/" + opts.Version,
	}
	if d.log == nil {
		d.log = zap.NewNop()
	}
	if d.now == nil {
		d.now = time.Now
	}
	if opts.Version == "" {
		d.userAgent = "postbackd/dev"
	}
	m := opts.Metrics
	if m == nil {
		m = metrics.New(nil)
	}

	names := make([]string, 0, len(partners))
	for name := range partners {
		names = append(names, name)
	}
	sort.Strings(names) // stable error order
	var errs []error
	for _, name := range names {
		p, perrs := compilePartner(name, partners[name], m, d.log)
		errs = append(errs, perrs...)
		if p != nil {
			d.partners[name] = p
		}
	}
	proxy, err := proxyFromEnvironment(os.Getenv, urlSchemes(partners))
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	longestTimeout := config.DefaultPartnerTimeout
	for _, p := range d.partners {
		longestTimeout = max(longestTimeout, p.cfg.Timeout)
	}
	d.client = newClient(longestTimeout, proxy)
	return d, nil
}

// withDefaults fills zero fields with config's defaults, the same as
// config.Load does, so that a Partner built in Go (tests, tools) behaves like
// one loaded from YAML. Values already set are kept.
func withDefaults(c config.Partner) config.Partner {
	setDur := func(p *time.Duration, def time.Duration) {
		if *p <= 0 {
			*p = def
		}
	}
	setDur(&c.Timeout, config.DefaultPartnerTimeout)
	r := &c.Retry
	if r.QuickAttempts <= 0 {
		r.QuickAttempts = config.DefaultQuickAttempts
	}
	setDur(&r.InitialInterval, config.DefaultInitialInterval)
	setDur(&r.MaxInterval, config.DefaultMaxInterval)
	setDur(&r.DelayedInitial, config.DefaultDelayedInitial)
	setDur(&r.DelayedMax, config.DefaultDelayedMax)
	r.DelayedMax = max(r.DelayedMax, r.DelayedInitial)
	setDur(&r.MaxAge, config.DefaultMaxAge)
	if c.RateLimit.PerSecond > 0 && c.RateLimit.Burst <= 0 {
		c.RateLimit.Burst = max(1, int(c.RateLimit.PerSecond))
	}
	if len(c.Success.Statuses) == 0 {
		c.Success.Statuses = defaultSuccessStatuses
	}
	if c.Breaker.Failures <= 0 {
		c.Breaker.Failures = config.DefaultBreakerFailures
	}
	setDur(&c.Breaker.Cooldown, config.DefaultBreakerCooldown)
	return c
}

func compilePartner(name string, raw config.Partner, m *metrics.Metrics, log *zap.Logger) (*partner, []error) {
	cfg := withDefaults(raw)
	key := "partners." + name
	var errs []error
	bad := func(path string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, path, fmt.Sprintf(format, args...)))
	}
	p := &partner{
		name:    name,
		cfg:     cfg,
		goals:   make(map[postback.Goal]goalTemplate, len(cfg.Goals)),
		token:   cfg.Token.Reveal(),
		success: make(map[int]bool, len(cfg.Success.Statuses)),

		dispatchSeconds: m.DispatchSeconds.WithLabelValues(name),
		retries:         m.Retries.WithLabelValues(name, "in_place"),
	}
	p.redact = newRedactor(p.token)

	for i, h := range cfg.AllowedHosts {
		ah, err := parseAllowedHost(h)
		if err != nil {
			bad(fmt.Sprintf("allowed_hosts[%d]", i), "%v", err)
			continue
		}
		p.allowed = append(p.allowed, ah)
	}
	if len(cfg.AllowedHosts) == 0 {
		bad("allowed_hosts", "empty: postbacks could go nowhere")
	}

	if ts := cfg.TrackerString; ts.Pattern != "" || ts.Param != "" {
		switch {
		case ts.Param == "":
			bad("tracker_string.param", "required with a pattern")
		case ts.Pattern == "":
			bad("tracker_string.pattern", "required with a param")
		default:
			tp, err := ParseTrackerPattern(ts.Pattern)
			if err != nil {
				bad("tracker_string.pattern", "%v", err)
			} else {
				p.tracker = tp
			}
		}
	}

	// The macro set is config's (config.Macros documents it); Render gives
	// each a value, which TestRenderEveryDocumentedMacro checks.
	known := config.KnownMacro(cfg)
	goals := make([]string, 0, len(cfg.Goals))
	for g := range cfg.Goals {
		goals = append(goals, string(g))
	}
	sort.Strings(goals)
	for _, gs := range goals {
		g := postback.Goal(gs)
		gc := cfg.Goals[g]
		path := "goals." + gs + ".url"
		if !g.Valid() {
			bad("goals."+gs, "unknown goal (want one of %v)", postback.Goals)
			continue
		}
		t, err := urltemplate.Parse(gc.URL, known)
		if err != nil {
			bad(path, "%v", err)
			continue
		}
		if err := p.checkTemplateHost(gc.URL); err != nil {
			bad(path, "%v", err)
			continue
		}
		alias := gc.Alias
		if alias == "" {
			alias = gs
		}
		gt := goalTemplate{tmpl: t, alias: alias}
		for _, m := range t.Macros() {
			gt.usesTracker = gt.usesTracker || strings.HasPrefix(m, "tr.")
		}
		p.goals[g] = gt
	}

	for _, s := range cfg.Success.Statuses {
		if s < 100 || s > 599 {
			bad("success.statuses", "%d is not an HTTP status", s)
		}
		p.success[s] = true
	}
	if cfg.Success.BodyPattern != "" {
		re, err := regexp.Compile(cfg.Success.BodyPattern)
		if err != nil {
			bad("success.body_pattern", "%v", err)
		}
		p.body = re
	}

	switch rl := cfg.RateLimit; {
	case rl.PerSecond < 0 || math.IsNaN(rl.PerSecond) || math.IsInf(rl.PerSecond, 0):
		bad("rate_limit.per_second", "%v: want 0 (unlimited) or more", rl.PerSecond)
	case rl.PerSecond > 0:
		p.limiter = rate.NewLimiter(rate.Limit(rl.PerSecond), rl.Burst)
	}

	p.breaker = newBreaker(cfg.Breaker.Failures, cfg.Breaker.Cooldown,
		m.BreakerOpen.WithLabelValues(name), log.With(zap.String("partner", name)))
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

// checkTemplateHost requires the scheme and authority of a template to be
// literal (no macro can move a postback to another host) and the host to be
// allowed. Render checks the rendered host again.
func (p *partner) checkTemplateHost(raw string) error {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || (!strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https")) {
		return fmt.Errorf("template %q must start with http:// or https://", raw)
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority := rest[:end]
	if strings.ContainsAny(authority, "{}") {
		return fmt.Errorf("template %q: the host may not contain a macro", raw)
	}
	if strings.Contains(authority, "@") {
		return fmt.Errorf("template %q: user info in the URL is not allowed", raw)
	}
	host, port := splitHostPort(authority)
	if host == "" {
		return fmt.Errorf("template %q has no host", raw)
	}
	if !p.hostAllowed(host, port) {
		return fmt.Errorf("template host %q: %w (allowed_hosts %v)", authority, ErrHostNotAllowed, p.cfg.AllowedHosts)
	}
	return nil
}

func parseAllowedHost(s string) (allowedHost, error) {
	if s == "" || strings.ContainsAny(s, "/?#@ ") {
		return allowedHost{}, fmt.Errorf("%q is not a host or host:port", s)
	}
	host, port := splitHostPort(s)
	if host == "" {
		return allowedHost{}, fmt.Errorf("%q has no host", s)
	}
	return allowedHost{host: host, port: port}, nil
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port"; a bare
// IPv6 address without brackets is all host. The host comes back lower case
// without brackets.
func splitHostPort(s string) (host, port string) {
	if h, pt, err := net.SplitHostPort(s); err == nil {
		return strings.ToLower(h), pt
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")), ""
}

// hostAllowed: exact host match, case-insensitive; the port matters only
// when the allowed entry names one.
func (p *partner) hostAllowed(host, port string) bool {
	host = strings.ToLower(host)
	for _, a := range p.allowed {
		if a.host == host && (a.port == "" || a.port == port) {
			return true
		}
	}
	return false
}

// HasGoal reports whether partner is configured and takes goal.
func (d *Dispatcher) HasGoal(partner string, goal postback.Goal) bool {
	p, ok := d.partners[partner]
	if !ok {
		return false
	}
	_, ok = p.goals[goal]
	return ok
}

// MaxAge is how long after its first attempt a postback to partner is given
// up on (Retry.MaxAge, default 24h; the default too for an unknown partner).
func (d *Dispatcher) MaxAge(partner string) time.Duration {
	if p, ok := d.partners[partner]; ok {
		return p.cfg.Retry.MaxAge
	}
	return defaultMaxAge
}

// NextDelay is how long the delayed path waits before the next round after
// `attempts` HTTP attempts in total. Each round (one Send) makes up to
// QuickAttempts attempts, so the round number is k = ceil(attempts /
// QuickAttempts) - 1 (at least 0), and
//
//	base  = min(DelayedInitial * 2^k, DelayedMax)
//	delay = base * (1 ± 25 % uniform jitter), clamped to [DelayedInitial, DelayedMax]
//
// The jitter spreads out postbacks that failed together so that a partner
// coming back is not hit by all of them at once. Unknown partners use the
// defaults (30s, 30m).
func (d *Dispatcher) NextDelay(partner string, attempts int) time.Duration {
	r := withDefaults(config.Partner{}).Retry
	if p, ok := d.partners[partner]; ok {
		r = p.cfg.Retry
	}
	k := 0
	if attempts > 0 {
		k = (attempts+r.QuickAttempts-1)/r.QuickAttempts - 1
	}
	base := float64(r.DelayedInitial) * math.Pow(2, float64(min(k, 62)))
	base = min(base, float64(r.DelayedMax))
	delay := base * (0.75 + 0.5*rand.Float64())
	return time.Duration(min(max(delay, float64(r.DelayedInitial)), float64(r.DelayedMax)))
}

// CloseIdleConnections closes the HTTP client's idle keep-alive connections;
// call it at shutdown, after the last Send has returned. Safe to call twice.
func (d *Dispatcher) CloseIdleConnections() { d.client.CloseIdleConnections() }
