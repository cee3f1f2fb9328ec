package storage

import "context"

// Syncer is implemented by stores whose Put can leave an object not yet
// durable (PutOptions.Unsynced): Sync makes it so.
type Syncer interface {
	// Sync returns once key's data is durable. ErrNotFound if absent.
	Sync(ctx context.Context, key string) error
}

// Sync makes key durable on stores that can defer it (Syncer); on the
// others every Put is durable already and Sync does nothing.
func Sync(ctx context.Context, st Store, key string) error {
	if s, ok := As[Syncer](st); ok {
		return s.Sync(ctx, key)
	}
	return nil
}
