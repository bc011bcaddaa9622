// Package metrics declares every Prometheus metric postbackd exports, in one
// place, so names and labels stay stable and documented (see README).
//
// Components receive a *Metrics through their constructors; there is no
// package-level registry. New(nil) gives working metrics on a private
// registry, which is what tests use.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector. All fields are safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	// EventsConsumed counts input messages by topic and result
	// ("ok", "invalid", "retried").
	EventsConsumed *prometheus.CounterVec
	// Postbacks counts postback outcomes by partner, goal and outcome
	// (delivered, failed, skipped, dead_lettered).
	Postbacks *prometheus.CounterVec
	// DispatchSeconds is the latency of one HTTP attempt by partner.
	DispatchSeconds *prometheus.HistogramVec
	// Retries counts retries by partner and path ("in_place", "delayed").
	Retries *prometheus.CounterVec
	// DLQWrites counts dead letters by reason.
	DLQWrites *prometheus.CounterVec
	// InFlight is the number of events fetched and not yet finished.
	InFlight prometheus.Gauge
	// CommitLag is, per topic and partition, the high watermark minus the
	// last committed offset, as last seen.
	CommitLag *prometheus.GaugeVec
	// RedisSeconds is the latency of Redis operations by operation.
	RedisSeconds *prometheus.HistogramVec
	// DelayedJobs counts delayed-path jobs by result
	// ("scheduled", "taken", "delivered", "rescheduled", "dead_lettered").
	DelayedJobs *prometheus.CounterVec
	// BreakerOpen is 1 while a partner's circuit breaker is open.
	BreakerOpen *prometheus.GaugeVec
	// AttributionWaits counts events that waited for their click's network,
	// by stage: "waiting" (stored), "released" (by the event that brought
	// the network), "deadline" (routed when the window ended).
	AttributionWaits *prometheus.CounterVec
	// Routes counts postbacks by how their partner was chosen (event, click,
	// conversion, default).
	Routes *prometheus.CounterVec
	// TopicMissing is 1 while a configured topic does not exist on the
	// cluster (deleted, or not created), 0 once it does.
	TopicMissing *prometheus.GaugeVec
}

// New creates the collectors and registers them (plus Go and process
// collectors) on reg, or on a new registry when reg is nil.
func New(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		Registry: reg,
		EventsConsumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postbackd_events_consumed_total", Help: "Input messages consumed, by topic and result.",
		}, []string{"topic", "result"}),
		Postbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postbackd_postbacks_total", Help: "Postback outcomes by partner, goal and outcome.",
		}, []string{"partner", "goal", "outcome"}),
		DispatchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "postbackd_dispatch_duration_seconds", Help: "Latency of one HTTP postback attempt.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"partner"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postbackd_retries_total", Help: "Postback retries by partner and path (in_place, delayed).",
		}, []string{"partner", "path"}),
		DLQWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postbackd_dlq_writes_total", Help: "Dead letters written, by reason.",
		}, []string{"reason"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postbackd_in_flight_events", Help: "Events fetched and not yet finished.",
		}),
		CommitLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postbackd_commit_lag", Help: "High watermark minus committed offset, per partition.",
		}, []string{"topic", "partition"}),
		RedisSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "postbackd_redis_duration_seconds", Help: "Latency of Redis operations.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5},
		}, []string{"op"}),
		DelayedJobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postbackd_delayed_jobs_total", Help: "Delayed retry path jobs, by result.",
		}, []string{"result"}),
		BreakerOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postbackd_breaker_open", Help: "1 while the partner's circuit breaker is open.",
		}, []string{"partner"}),
		AttributionWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postbackd_attribution_waits_total", Help: "Events that waited for their click's network, by stage (waiting, released, deadline).",
		}, []string{"stage"}),
		Routes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postbackd_routes_total", Help: "Postback outcomes by how their partner was chosen (event, click, conversion, default).",
		}, []string{"route"}),
		TopicMissing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postbackd_topic_missing", Help: "1 while a configured topic does not exist on the cluster.",
		}, []string{"topic"}),
	}
	reg.MustRegister(m.EventsConsumed, m.Postbacks, m.DispatchSeconds, m.Retries, m.DLQWrites,
		m.InFlight, m.CommitLag, m.RedisSeconds, m.DelayedJobs, m.BreakerOpen, m.AttributionWaits, m.Routes, m.TopicMissing,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
