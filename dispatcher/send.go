package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v4"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/postback"
)

const (
	// maxBody is how much of an answer is read to judge it.
	maxBody = 64 << 10
	// maxDrain is how much more is read and discarded so the connection can
	// be reused; a longer answer costs its connection.
	maxDrain = 256 << 10
	// maxSnippet is how much of a body goes into an error.
	maxSnippet = 256
	// maxRetryAfter caps a partner's Retry-After hint.
	maxRetryAfter = 7 * 24 * time.Hour
)

// Result is what one Send did.
type Result struct {
	// Delivered: the partner accepted the postback. Err is nil iff Delivered.
	Delivered bool
	// Permanent: do not retry, not even on the delayed path (a status other
	// than success, 408, 429 and 5xx; a body-level refusal; a rendering
	// problem).
	Permanent bool
	// RetryAfter is the least time the delayed path should wait: the
	// partner's Retry-After hint of the last answer, or the rest of the
	// breaker's cooldown when ErrBreakerOpen; 0 if none.
	RetryAfter time.Duration
	// HTTPStatus of the last answer, 0 if none.
	HTTPStatus int
	// Attempts is the number of HTTP attempts this call made (0 when the
	// breaker was open or rendering failed).
	Attempts int
	// URL is the rendered URL with the token redacted ("" if rendering failed
	// before a URL existed).
	URL string
	// Warnings from rendering (see Rendered.Warnings).
	Warnings []string
	// Err says what went wrong; nil iff Delivered. It never contains the token.
	Err error
	// Latency of the last attempt, body read included.
	Latency time.Duration
	// FirstAttempt and LastAttempt are when this call's first and last
	// attempts started (zero when Attempts is 0).
	FirstAttempt, LastAttempt time.Time
}

// ResponseError is an answer that did not count as success. Permanent ones
// come wrapped with ErrRefused.
type ResponseError struct {
	StatusCode int
	// Body is the start of the answer, the partner's token redacted (at
	// most 256 bytes, valid UTF-8), for diagnosis.
	Body string
}

func (e *ResponseError) Error() string {
	if e.Body == "" {
		return "HTTP " + strconv.Itoa(e.StatusCode)
	}
	return fmt.Sprintf("HTTP %d: %q", e.StatusCode, e.Body)
}

// responseError keeps the start of body for diagnosis. The token is redacted
// from the whole body before it is cut: cut first, a token echoed across the
// cut would leave its prefix behind, where no redaction recognises it.
func (p *partner) responseError(status int, body []byte) *ResponseError {
	s := p.redactString(strings.ToValidUTF8(string(body), "\uFFFD"))
	if len(s) > maxSnippet {
		cut := maxSnippet
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return &ResponseError{StatusCode: status, Body: s}
}

// Send delivers pb: it renders the URL, then makes up to
// Retry.QuickAttempts attempts, each after the partner's rate limiter and
// circuit breaker allow it, each with its own Timeout, separated by a
// jittered exponential backoff (InitialInterval … MaxInterval).
//
// It starts no further attempt, and ends a backoff or rate-limit wait, once
// the context is done (not delivered, not permanent); an attempt under way
// runs to its answer or deadline, and a success that arrives counts. It
// stops early when an answer is permanent, when the breaker opens, or when
// the partner asks (Retry-After) for more than MaxInterval: then RetryAfter
// carries the hint to the delayed path. Send never panics on a partner's answer and never
// returns an error or URL that contains the token.
func (d *Dispatcher) Send(ctx context.Context, pb postback.Postback) Result {
	p, ok := d.partners[pb.Partner]
	if !ok {
		return Result{Permanent: true, Err: fmt.Errorf("partner %q: %w", pb.Partner, ErrUnknownPartner)}
	}
	r, err := p.render(pb)
	if err != nil {
		return Result{Permanent: true, URL: r.Redacted, Warnings: r.Warnings, Err: err}
	}
	res := Result{URL: r.Redacted, Warnings: r.Warnings}
	p.send(ctx, d, pb, &r, &res)
	if res.Err != nil {
		res.Err = &redactedError{
			msg: p.redactString(fmt.Sprintf("partner %q goal %q: %v", p.name, pb.Goal, res.Err)),
			err: res.Err,
		}
	}
	return res
}

func (p *partner) send(ctx context.Context, d *Dispatcher, pb postback.Postback, r *Rendered, res *Result) {
	var bo *backoff.ExponentialBackOff // made at the first retry: most sends never need it
	for {
		// The context first: a stopping process must not start an attempt.
		if err := ctx.Err(); err != nil {
			res.Err = stopped(err, res.Err)
			return
		}
		ok, wait := p.breaker.allow(d.now())
		if !ok {
			if res.Attempts == 0 {
				res.Err, res.RetryAfter = ErrBreakerOpen, wait
			}
			// Otherwise keep the last attempt's error: it is why the breaker
			// opened, and the caller takes the delayed path either way.
			return
		}
		if p.limiter != nil {
			if err := p.limiter.Wait(ctx); err != nil {
				// The context is done, or its deadline is nearer than our turn.
				p.breaker.report(verdictNone, d.now())
				res.Err = stopped(fmt.Errorf("rate limit: %w", err), res.Err)
				return
			}
		}

		now := d.now()
		if res.Attempts == 0 {
			res.FirstAttempt = now
		}
		res.LastAttempt = now
		res.Attempts++
		o := d.attempt(ctx, p, r)
		res.HTTPStatus, res.Latency, res.RetryAfter = o.status, o.latency, o.retryAfter

		var perm *backoff.PermanentError
		switch {
		case o.err == nil:
			p.breaker.report(verdictHealthy, d.now())
			res.Delivered, res.Err = true, nil
			return
		case ctx.Err() != nil:
			// Our own cancellation, not the partner's fault.
			p.breaker.report(verdictNone, d.now())
			res.Err = stopped(ctx.Err(), o.err)
			return
		case errors.As(o.err, &perm):
			p.breaker.report(verdictHealthy, d.now()) // it answered
			res.Permanent, res.Err = true, perm.Err
			return
		}
		p.breaker.report(verdictFailed, d.now())
		res.Err = o.err
		if res.Attempts >= p.cfg.Retry.QuickAttempts {
			return
		}
		if bo == nil {
			bo = backoff.NewExponentialBackOff(
				backoff.WithInitialInterval(p.cfg.Retry.InitialInterval),
				backoff.WithMaxInterval(p.cfg.Retry.MaxInterval),
				backoff.WithMaxElapsedTime(0), // the attempt count bounds the loop
			)
		}
		next := bo.NextBackOff()
		if o.retryAfter > 0 {
			if o.retryAfter > p.cfg.Retry.MaxInterval {
				return // more than we wait in place: the delayed path honours it
			}
			next = max(next, o.retryAfter)
		}
		p.retries.Inc()
		d.log.Debug("postback retry in place",
			zap.String("partner", p.name), zap.String("goal", string(pb.Goal)),
			zap.String("postback_id", pb.ID), zap.Int("attempt", res.Attempts),
			zap.Int("http_status", o.status), zap.Duration("wait", next),
			zap.String("url", r.Redacted), zap.String("error", p.redactString(o.err.Error())))
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			res.Err = stopped(ctx.Err(), res.Err)
			return
		case <-t.C:
		}
	}
}

// stopped is the error of a Send stopped by its context, keeping the last
// attempt's error for diagnosis.
func stopped(err, last error) error {
	if last == nil {
		return fmt.Errorf("stopped: %w", err)
	}
	return fmt.Errorf("stopped: %w (last attempt: %w)", err, last)
}

// outcome is one attempt. err is nil on success and a
// *backoff.PermanentError when trying again cannot help.
type outcome struct {
	status     int
	retryAfter time.Duration
	latency    time.Duration
	err        error
}

// attempt makes one GET and judges the answer. It runs on the caller's
// goroutine until the answer or its deadline: the partner's Timeout, or the
// context's deadline if that is nearer. Cancelling ctx does not cut it short
// (see client.go); Send looks at ctx before each attempt.
func (d *Dispatcher) attempt(ctx context.Context, p *partner, r *Rendered) outcome {
	start := time.Now()
	deadline := start.Add(p.cfg.Timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp) // closes a body stream not read to its end
	req.SetRequestURI(r.target)
	req.Header.SetUserAgent(d.userAgent)

	err := d.client.DoDeadline(req, resp, deadline)
	if err != nil && sendAgain(resp, err) {
		err = d.client.DoDeadline(req, resp, deadline)
	}
	if err != nil {
		o := outcome{latency: time.Since(start)}
		p.dispatchSeconds.Observe(o.latency.Seconds())
		if isTimeout(err) && ctx.Err() == nil {
			o.err = fmt.Errorf("timeout after %s: %w", p.cfg.Timeout, context.DeadlineExceeded)
		} else {
			o.err = fmt.Errorf("GET: %w", err)
		}
		return o // network errors and timeouts are retried
	}

	status := resp.StatusCode()
	need := p.body != nil || !p.success[status]
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	readErr := readAnswer(resp, buf, need)
	body := buf.Bytes()
	o := outcome{status: status, latency: time.Since(start)}
	p.dispatchSeconds.Observe(o.latency.Seconds())

	retry, cerr := p.check(status, body)
	switch {
	case cerr == nil:
		return o
	case readErr != nil && p.success[status]:
		// A success status whose body we could not read to judge.
		o.err = fmt.Errorf("reading body of HTTP %d: %w", status, readErr)
		return o
	case !retry:
		o.err = backoff.Permanent(cerr)
		return o
	}
	o.err = cerr
	o.retryAfter = parseRetryAfter(string(resp.Header.Peek("Retry-After")), d.now())
	return o
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readAnswer reads up to maxBody bytes of resp's body into buf when need is
// set, then reads and discards up to maxDrain more so the kept-alive
// connection can serve the next request; a longer answer costs its
// connection (closed when resp is released).
func readAnswer(resp *fasthttp.Response, buf *bytes.Buffer, need bool) error {
	stream := resp.BodyStream()
	if stream == nil { // the body was not streamed: it is all in resp
		if need {
			buf.Write(resp.Body()[:min(len(resp.Body()), maxBody)])
		}
		return nil
	}
	var readErr error
	if need {
		_, readErr = buf.ReadFrom(io.LimitReader(stream, maxBody))
	}
	if readErr == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(stream, maxDrain))
	}
	return readErr
}

// check is the "what went wrong" half: it says whether an answer is a
// success, and if not, why, and whether trying again could help (the
// "should we retry" half, retryableStatus). Modelled on alertmanager's
// notify.Retrier.Check.
func (p *partner) check(status int, body []byte) (retry bool, err error) {
	if p.success[status] {
		if p.body == nil || p.body.Match(body) {
			return false, nil
		}
		return false, fmt.Errorf("%w: body does not match success pattern: %w", ErrRefused, p.responseError(status, body))
	}
	re := p.responseError(status, body)
	if retryableStatus(status) {
		return true, re
	}
	return false, fmt.Errorf("%w: %w", ErrRefused, re)
}

// retryableStatus: the partner may accept the same request later — request
// timeout, too many requests, or its own failure. Everything else that is not
// a success (3xx not listed as success, other 4xx) will be refused again.
func retryableStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP-date.
// It returns 0 for a missing, malformed or past value.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return min(time.Duration(min(s, int64(maxRetryAfter/time.Second)))*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, maxRetryAfter)
		}
	}
	return 0
}

// redactedError is Send's final error: the message with the token replaced
// (belt and braces: no message is built from the URL), the chain intact for
// errors.Is.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
