package storage

import (
	"context"
	"iter"
)

// KeyLister is implemented by stores where a listing with attributes costs
// one more request or syscall per object than a listing of keys (file://:
// getdents(2) names every file, a stat(2) per file is what costs). Callers
// that need the attributes of only a few listed objects use ListKeys and
// Stat those few: the pruner on a million-object directory stats only what
// it may delete.
type KeyLister interface {
	// ListKeys is List whose objects may carry only their key: an object
	// without attributes has a zero ModTime (see Object.HasAttrs).
	ListKeys(ctx context.Context, prefix string) iter.Seq2[Object, error]
}

// HasAttrs reports whether o carries Size, ModTime and ETag (every object
// from List, Stat, Get or Put does; ListKeys may leave them out).
func (o Object) HasAttrs() bool { return !o.ModTime.IsZero() }

// ListKeys lists st's keys under prefix, without attributes where that is
// cheaper (a KeyLister along st's decorators, see As), with them otherwise.
func ListKeys(ctx context.Context, st Store, prefix string) iter.Seq2[Object, error] {
	if kl, ok := As[KeyLister](st); ok {
		return kl.ListKeys(ctx, prefix)
	}
	return st.List(ctx, prefix)
}

// KeyBatchLister is a KeyLister that can hand its listing over in the
// batches it makes (file://: up to 1024 keys of one directory), so a caller
// that works in batches (ListParallel) copies no object twice.
type KeyBatchLister interface {
	KeyLister
	// ListKeyBatches is ListKeys in batches: each a new slice, the
	// caller's to keep.
	ListKeyBatches(ctx context.Context, prefix string) iter.Seq2[[]Object, error]
}

// listKeyBatches is ListKeys in batches: straight from the KeyLister that
// ListKeys would use if it batches itself, re-batched otherwise.
func listKeyBatches(ctx context.Context, st Store, prefix string) iter.Seq2[[]Object, error] {
	kl, ok := As[KeyLister](st)
	if !ok {
		return batched(st.List(ctx, prefix))
	}
	if bl, ok := kl.(KeyBatchLister); ok {
		return bl.ListKeyBatches(ctx, prefix)
	}
	return batched(kl.ListKeys(ctx, prefix))
}
