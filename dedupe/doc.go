// Package dedupe holds all of postbackd's Redis state: click contexts, deposit
// classification (FTD or rdep), postback claims (the send guard), the FTD
// qualification state, and the delayed-retry schedule.
//
// Every operation is one round trip and atomic: a Lua script (go-redis
// Script: EVALSHA, EVAL when the server lacks it) or a single command. The
// hot path has batch forms (ClassifyBatch, ClaimBatch, MarkDeliveredBatch)
// that pipeline many scripts in one round trip; each script stays atomic on
// its own, a batch as a whole is not.
// Scripts never read the server clock or wall time: times come from the
// caller, lifetimes are relative (PX / PEXPIRE).
//
// # Key layout
//
// P is Options.Prefix (no braces). All keys of one click share the Cluster
// hash tag {c:<click_id>}, so every click script runs on one slot. A click
// id containing '{' or '}' would break the tag (Redis hashes the text between
// the first '{' and the next '}', so such ids would share slots by prefix)
// and make keys ambiguous (click "a" + event "e}:ftd" vs click "a}:ans:e");
// such an id is replaced in keys by {h:<sha1 hex of the id>}; the markers c:
// and h: keep both forms apart.
// Variable ids come last, after a fixed kind, so keys are unambiguous for
// any id.
//
//	P:{c:<click>}:ctx                 STRING  click context JSON           TTL RecordTTL
//	P:{c:<click>}:ftd                 HASH    FTD record                    never expires
//	    event_id amount currency occurred_at delivered(0|1) status status_event_id
//	P:{c:<click>}:ans:<event_id>      STRING  classification "ftd"|"rdep"  TTL RecordTTL
//	P:{c:<click>}:lease:<postback_id> STRING  claim token                  TTL the lease
//	P:{c:<click>}:done:<postback_id>  STRING  Delivery JSON                TTL RecordTTL
//	P:{c:<click>}:parked              HASH    parked qualification         TTL RecordTTL
//	    event_id status payload parked_at released(""|1)
//	{P:q:<n>}:due                     ZSET    job id -> due (unix ms)      n = fnv32a(id) % Shards
//	{P:q:<n>}:jobs                    HASH    job id -> "<due ms>|payload"
//
// The schedule is spread over Shards key pairs so no single key grows
// without bound and a Cluster spreads the load; each shard's script touches
// only its own pair.
//
// # Contracts
//
//   - Classify: an answer stored under the event id wins (Repeated); without
//     one, a deposit whose event id is the FTD record's is ftd again (even
//     after the answer expired); no FTD record makes the deposit the FTD
//     (record created, never expires); otherwise rdep. Concurrent first
//     deposits of one click yield exactly one FTD. Safe to call twice.
//   - Claim / MarkDelivered / Release: at most one unexpired lease per
//     postback, each with a random token. MarkDelivered records the delivery
//     even after the lease expired, keeps the first record, drops the lease
//     only if the token still holds it. With ftd set it marks the FTD record
//     delivered and releases the parked qualification (marks it released and
//     returns it, again on every repeat), recording its status on the FTD
//     record, in the same script. Release with a stale token is a no-op. All
//     safe to call twice.
//   - Qualify: Send when the delivered FTD has no status yet (it is recorded)
//     or the same status (Repeated); Conflict when the FTD or a parked
//     qualification has another status; otherwise Wait, parking the first
//     qualification (a same-status repeat is Repeated and keeps the first).
//     Invariant: a status is recorded only on a delivered FTD, and nothing
//     stays parked (unreleased) once the FTD is delivered.
//   - TakeOrphan / TakeParked: take (delete) a parked, unreleased
//     qualification at most once.
//   - Schedule is idempotent by id (replaces due and payload); TakeDue
//     leases what it returns (the job reappears after the lease unless it is
//     acked or rescheduled), so a job may be returned twice; Ack is safe to
//     call twice.
//
// # TTLs
//
// Classification answers, delivered marks, click contexts and parked
// qualifications live RecordTTL (default 7 days), which must exceed the
// longest redelivery or retry horizon. FTD records and scheduled jobs never
// expire (jobs until acked). Leases live as long as the caller asks.
package dedupe
