package pipeline

import (
	"context"
	"time"

	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/internal/batch"
)

// batchedStore is the dedupe store with its hot-path calls coalesced across
// the events in flight: the click lookup, the classification, the claim and
// the delivered mark of many concurrent events share pipelined round trips
// (each script stays atomic on its own). Every call keeps the contract of
// its dedupe.Store counterpart; all four are safe to repeat, which batching
// requires. The rarer calls go straight to the store.
type batchedStore struct {
	*dedupe.Store
	loadClick *batch.Coalescer[string, clickLookup]
	classify  *batch.Coalescer[dedupe.Deposit, dedupe.Classification]
	claim     *batch.Coalescer[dedupe.ClaimRequest, dedupe.ClaimResult]
	mark      *batch.Coalescer[dedupe.MarkRequest, *dedupe.Parked]
}

type clickLookup struct {
	ctx   dedupe.ClickContext
	found bool
}

func newBatchedStore(s *dedupe.Store) *batchedStore {
	o := batch.Options{Max: 256, Concurrency: 4}
	return &batchedStore{
		Store: s,
		loadClick: batch.New(func(ctx context.Context, ids []string) ([]clickLookup, error) {
			cs, found, err := s.LoadClickBatch(ctx, ids)
			if err != nil {
				return nil, err
			}
			out := make([]clickLookup, len(ids))
			for i := range ids {
				out[i] = clickLookup{ctx: cs[i], found: found[i]}
			}
			return out, nil
		}, o),
		classify: batch.New(s.ClassifyBatch, o),
		claim:    batch.New(s.ClaimBatch, o),
		mark:     batch.New(s.MarkDeliveredBatch, o),
	}
}

// close stops the coalescers; calls after it fail with batch.ErrClosed.
func (b *batchedStore) close() {
	b.loadClick.Close()
	b.classify.Close()
	b.claim.Close()
	b.mark.Close()
}

func (b *batchedStore) LoadClick(ctx context.Context, clickID string) (dedupe.ClickContext, bool, error) {
	r, err := b.loadClick.Do(ctx, clickID)
	return r.ctx, r.found, err
}

func (b *batchedStore) Classify(ctx context.Context, d dedupe.Deposit) (dedupe.Classification, error) {
	return b.classify.Do(ctx, d)
}

// Claim takes the claim with the caller's token (dedupe.NewClaimToken), so
// that re-running it — the coalescer's one-by-one fallback, or the caller's
// own retry — finds the lease it may already have taken instead of waiting
// a whole lease for it.
func (b *batchedStore) Claim(ctx context.Context, clickID, postbackID, token string, lease time.Duration) (dedupe.ClaimResult, error) {
	return b.claim.Do(ctx, dedupe.ClaimRequest{ClickID: clickID, PostbackID: postbackID, Lease: lease, Token: token})
}

func (b *batchedStore) MarkDelivered(ctx context.Context, clickID, postbackID, token string, d dedupe.Delivery, ftd *dedupe.FTDDelivered) (*dedupe.Parked, error) {
	return b.mark.Do(ctx, dedupe.MarkRequest{ClickID: clickID, PostbackID: postbackID, Token: token, Delivery: d, FTD: ftd})
}
