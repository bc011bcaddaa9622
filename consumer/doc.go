// Package consumer consumes the input topics as one member of a Kafka
// consumer group (segmentio/kafka-go's ConsumerGroup), runs messages
// concurrently across keys while each key keeps its order, and commits per
// partition only the contiguous finished prefix.
//
// # Guarantees
//
// At least once, never skipped. An offset is committed only after its
// message and every earlier message of its partition returned nil from
// Handler.Handle, which a handler does only once the outcome is durable. A
// failing Handle is retried in place with jittered exponential backoff until
// it succeeds or the consumer stops; nothing is ever skipped. There is no
// auto-commit.
//
// What is committed when. Each partition tracks its fetched offsets; the
// committable offset is one past the last offset of the contiguous finished
// prefix (the Kafka convention: the next offset to read). Every
// CommitInterval, one OffsetCommit request carries every partition whose
// committable offset moved. When a generation ends (rebalance) or Run stops,
// fetching stops, in-flight messages get up to DrainTimeout to finish, and the
// finished prefix is committed once more before the partitions are given up.
// While draining the member keeps heartbeating, so that last commit is
// accepted even if the drain outlasts the session timeout (up to the
// rebalance timeout, which DrainTimeout plus CancelGrace must stay below).
//
// What is redelivered. After a crash, an eviction, or a drain that ran out of
// time, the next owner of a partition resumes from its last commit: every
// message after the committed prefix is handled again, including messages
// that had already finished behind an unfinished one. Handlers must
// therefore be idempotent (postbackd's are, through Redis). After
// DrainTimeout, handler contexts are cancelled and queued messages of the
// ending generation are not started; they are redelivered too. Cancelled
// handlers then get CancelGrace to return (postbackd's HTTP attempt in
// flight runs to its answer or timeout): a message whose handler returns nil
// within it is committed.
//
// Ordering scope. Messages with the same Kafka key (the click_id) run strictly
// one after another, in fetch order, within this member, across all its
// partitions and topics; different keys run concurrently. A message with an
// empty key has no ordering. Across a rebalance the new owner resumes from the
// committed prefix, so a key's messages are handled again in partition order,
// possibly repeating ones already handled; the old owner's drain finishes
// before it joins the next generation, so one member never runs two
// generations of a partition at once.
//
// Memory bound. At most MaxInFlight messages are fetched and unfinished at
// once across partitions (fetching blocks at the limit: backpressure); busy
// workers and queued jobs are bounded by the same number (an idle worker
// parks for a second for the next key, then exits). Beyond that each
// assigned partition holds the reader's prefetch (up to 100 messages and a
// 10 MB fetch) and a tracker window of at most MaxUncommitted offsets (16
// bytes each): once that many offsets sit behind an unfinished message, that
// partition alone stops fetching until the message finishes.
//
// Missing topics. Before taking each generation the member checks that
// every subscribed topic exists. While one is missing (deleted, or the
// broker replaced by an empty one) it does not rejoin: it backs off, logs
// one error per interval, is not Ready and reports MissingTopics, and goes
// on by itself once they exist. kafka-go alone would end every generation at
// once and rejoin in a tight loop. And a generation that ends as soon as it
// began (a topic being deleted that the broker's metadata still lists, or a
// cause unknown) is followed by a pause that doubles while it goes on.
package consumer
