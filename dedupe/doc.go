// Package dedupe holds all of postbackd's Redis state: click contexts, deposit
// classification (FTD or rdep), postback claims (the send guard), the FTD
// qualification state, and the delayed-retry schedule.
//
// Every operation is one round trip and atomic, a Lua script (go-redis
// Script: EVALSHA, EVAL when the server lacks it) or a single command, but
// one: the delivered mark of a postback that is not an FTD records the
// answer (SET NX) and, in a second round trip once it is recorded, drops
// the lease (DEL); the lease guards nothing after the answer, and is never
// dropped before it. The
// hot path has batch forms (AttributeBatch, ClassifyBatch, ClaimBatch,
// ClassifyClaimBatch, MarkDeliveredBatch, QualifyBatch, ScheduleBatch,
// FinishWaitingBatch) that pipeline many scripts in one round trip; each
// script stays atomic on its own, a batch as a whole is not.
// ClassifyClaimBatch is a deposit's classification and the claim of the
// postback it calls for in one script (the two scripts' Lua shared as
// functions), so a deposit costs one round trip less.
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
//	P:{c:<click>}:ctx                 STRING  click context JSON           TTL RecordTTL from its last touch
//	P:{c:<click>}:route:<event_id>    STRING  "<via>|<partner>" route memo TTL RecordTTL
//	P:{c:<click>}:await               HASH    event_id -> payload | "-"    TTL RecordTTL (waiting events; "-" finished)
//	P:{c:<click>}:ftd                 HASH    FTD record                    never expires
//	    event_id amount currency occurred_at delivered(0|1) status status_event_id
//	    failed(""|reason) route_partner route_via route_params(JSON)
//	P:{c:<click>}:ans:<event_id>      STRING  classification "ftd"|"rdep"  TTL RecordTTL
//	P:{c:<click>}:lease:<postback_id> STRING  claim token                  TTL the lease
//	P:{c:<click>}:done:<postback_id>  STRING  Delivery JSON                TTL RecordTTL
//	P:{c:<click>}:parked              HASH    parked qualification         TTL RecordTTL
//	    event_id status payload parked_at released(""|1|2)
//	P:{c:<click>}:orphan:<event_id>   HASH    dead-lettered orphan         TTL what the parked one had left
//	    the parked record's fields, released=2
//	{P:q:<n>}:due                     ZSET    job id -> due (unix ms)      n = fnv32a(id) % Shards
//	{P:q:<n>}:jobs                    HASH    job id -> "<due ms>|payload"
//
// # States
//
// The FTD record is undelivered (delivered 0, failed ""), delivered
// (delivered 1, by MarkDelivered(ftd)) or failed (failed = the reason given
// to FailFTD). A delivered FTD is never failed afterwards; one delivered
// after it failed (a redelivered deposit the partner accepted after all)
// counts as delivered: a delivery is a fact. Its status is recorded once it
// is delivered.
//
// The parked record is waiting (released ""), released to its status change
// (released 1, by MarkDelivered(ftd)) or dead-lettered because its FTD
// failed (released 2, by FailFTD). Neither end state is deleted: both stay
// until the record's TTL so that repeating the call that ended the wait
// returns the record again, and a crash between the Redis change and the
// output written for it loses nothing (the output is written at least
// once). Only a waiting record holds the parking place for Qualify. An
// orphan (a wait whose window passed with no FTD, TakeOrphan) is renamed
// to its event's orphan key with released 2, which frees the parking place
// for a later qualification of the click, exactly as a delete would, and
// keeps the record for repeats.
//
// The schedule is spread over Shards key pairs so no single key grows
// without bound and a Cluster spreads the load; each shard's script touches
// only its own pair.
//
// # Contracts
//
//   - Attribute: the click context accumulates (first network kept, params
//     merged key by key with the first value kept, nothing erased); the
//     event is routed by a remembered route for its event id, else its own
//     network, else the click's, else it waits (when allowed and the click
//     has neither network nor registration), else the default partner,
//     else unroutable. A route from the click or by default is remembered
//     per event id. Parking and the arrival of a network or registration
//     are decided in one script, so a waiting event is always handed back
//     (Released) by the event that ends its wait; it is handed back on
//     every such call until FinishWaiting. Safe to call twice.
//   - Classify: an answer stored under the event id wins (Repeated); without
//     one, a deposit whose event id is the FTD record's is ftd again (even
//     after the answer expired); no FTD record makes the deposit the FTD
//     (record created with the deposit's route, never expires); otherwise
//     rdep. Concurrent first
//     deposits of one click yield exactly one FTD. Safe to call twice.
//   - Claim / MarkDelivered / Release: at most one unexpired lease per
//     postback, each with a random token. MarkDelivered records the delivery
//     even after the lease expired, keeps the first record, and drops the
//     lease whoever holds it (every claim reads the delivery first, so the
//     lease guards nothing once it is recorded); it needs no token, and
//     without ftd it is two plain commands, not a script, the DEL sent only
//     once the SET is answered. With ftd set it
//     marks the FTD record delivered and releases the waiting qualification
//     (marks it released and returns it, again on every repeat; never a
//     dead-lettered one), recording its status on the FTD record, in the
//     same script. Release with a stale token is a no-op. All safe to call
//     twice.
//   - Qualify: Send when the delivered FTD has no status yet (it is recorded)
//     or the same status (Repeated); Conflict when the FTD or a waiting
//     qualification has another status; FTDFailed (nothing parked) when the
//     undelivered FTD failed; otherwise Wait, parking the first
//     qualification (a same-status repeat is Repeated and keeps the first;
//     ParkedEventID names it, so a redelivery of the parked event is told
//     from another qualification). Invariant: a status is recorded only on a
//     delivered FTD, and nothing waits once the FTD is delivered or failed.
//   - FailFTD: marks the undelivered FTD failed (the first reason is kept)
//     and the waiting qualification dead-lettered, returning it, in one
//     script; a repeat returns the same qualification again. No-op on a
//     delivered FTD; ErrNotFTD (nothing written) for another event id.
//   - TakeOrphan: dead-letters the waiting qualification of that event when
//     there is no FTD, or it failed; FTDPending while the FTD is
//     undelivered; Lapsed when nothing of it is stored any more; a repeat
//     returns the same orphan again. A qualification
//     released or dead-lettered by FailFTD is Gone for it, and an orphan is
//     not dead-lettered again by FailFTD nor released by MarkDelivered.
//   - Schedule is idempotent by id (replaces due and payload); TakeDue
//     leases what it returns (the job reappears after the lease unless it is
//     acked or rescheduled), so a job may be returned twice; Ack is safe to
//     call twice.
//
// # TTLs
//
// Classification answers, delivered marks, click contexts (from their last
// touch), route memos, waiting events and parked qualifications (waiting,
// released or dead-lettered, orphans included: the TTL runs from parking)
// live RecordTTL (default 7 days), which must exceed the longest
// redelivery, retry or wait horizon (the service's configuration checks it). FTD records and scheduled jobs never
// expire (jobs until acked). Leases live as long as the caller asks.
package dedupe
