// Package pipeline is postbackd's business logic: it turns one decoded input
// event into the postbacks it means, sends each exactly once in effect, and
// writes every outcome to the audit topic.
//
// Delivery guarantees (what Handle promises the consumer):
//
//   - Handle returns nil only when the event's outcome is durable: the
//     postback was delivered and marked in Redis, or handed to the delayed
//     retry path (a Redis schedule), or written to the DLQ; and the audit
//     record (plus the confirmation, for an FTD status change) was
//     acknowledged by all in-sync replicas. Only then may the offset commit.
//   - Handle returns an error when that could not be made durable (Redis or
//     Kafka unreachable). Calling Handle again with the same message is safe:
//     classification answers are remembered per event id, and every send is
//     guarded by a claim on the stable postback id, so a repeat never sends
//     twice; it re-emits the audit record from what Redis remembers.
//   - An accepted postback is never sent again by the process that saw it
//     accepted: its mark is retried until Redis takes it (a stop does not
//     cut it short), and a redelivery meanwhile waits for it (acceptedSet).
//     A refused mark (ErrNotFTD) is audited and dead-lettered, not retried.
//   - The duplicate windows: a crash after the partner accepted a postback
//     and before MarkDelivered reached Redis, and a request whose answer
//     never came. The claim's lease then expires and the redelivered event
//     sends again, with the same transaction_id, which partners that accept
//     one use to drop the duplicate.
//
// Attribution (attribution.go): every event is routed from its click's
// accumulated context; a deposit or revenue event of a click with neither
// network nor registration may wait in Redis for one, released by the event
// that brings it or routed by default at its deadline (a delayed-path job).
// An FTD keeps its route for its status change.
//
// Ordering: the consumer runs one click's events in order. A status change is
// sent only after its FTD was delivered: a qualification that finds no
// delivered FTD is parked in Redis and released atomically by the FTD's
// MarkDelivered; if its window passes with no FTD at all it goes to the DLQ
// as an orphan, and if the FTD is given up on (FailFTD) it goes to the DLQ at
// once. Every such Redis transition is repeatable and returns the same
// qualification again, so the dead letter written after it is at-least-once.
//
// The delayed retry path: after a partner's quick in-place tries fail (or its
// breaker is open) the postback is stored in a sharded Redis schedule with a
// due time (jittered exponential, honouring Retry-After); RunDelayed takes due
// jobs under a lease, so a crashed taker's jobs reappear; after the partner's
// maximum age the postback goes to the DLQ.
package pipeline
