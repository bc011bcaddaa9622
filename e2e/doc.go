// Package e2e holds end-to-end tests of the real postbackd binary: it is
// built once, run as separate processes in one consumer group against a real
// Kafka broker and a real Redis, and judged by an oracle that is written in
// plain Go over the generated input (it calls no pipeline code).
//
// The tests run only when KAFKA_BROKERS and REDIS_ADDR are set (CI sets
// both; eval "$(bash scripts/infra.sh up)" starts them locally) and skip
// with the reason otherwise. kcat must be on PATH for the wire-format test.
package e2e
