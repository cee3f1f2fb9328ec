package storage

// Unwrapper is implemented by every Store that decorates another (Counting,
// storagetest.Faulty, …): Unwrap returns the store it wraps.
type Unwrapper interface {
	Unwrap() Store
}

// As finds an optional capability (KeyLister, Syncer, Presigner,
// SpecialLister, …) along st's chain of decorators: st itself if it has it,
// else the store it wraps, and so on. A decorator that implements the
// capability itself (Counting's ListKeys, to count it) is found first; one
// that does not is looked through, so no decorator hides what the store
// underneath can do.
func As[T any](st Store) (T, bool) {
	for st != nil {
		if c, ok := st.(T); ok {
			return c, true
		}
		u, ok := st.(Unwrapper)
		if !ok {
			break
		}
		st = u.Unwrap()
	}
	var zero T
	return zero, false
}
