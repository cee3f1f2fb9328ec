package storage

import "context"

// ManyStater is implemented by stores that stat a run of keys more cheaply
// together than one by one: the file driver opens each directory of the run
// once (without following links) and stats each name in it with one
// fstatat(2), where a lone Stat of a nested key costs three system calls.
type ManyStater interface {
	// StatMany stats keys in order and calls each with every result (an
	// absent key: ErrNotFound, as Stat). An error from each stops it and is
	// returned; so is ctx's.
	StatMany(ctx context.Context, keys []string, each func(i int, o Object, err error) error) error
}

// StatMany stats keys in order, through st's own StatMany if it has one,
// else one Stat each. Only st itself is asked, not the stores it decorates:
// a decorator that changes Stat (fault injection, counting) must see every
// key, so one that can pass a run on implements ManyStater itself (Counting).
func StatMany(ctx context.Context, st Store, keys []string, each func(i int, o Object, err error) error) error {
	if ms, ok := st.(ManyStater); ok {
		return ms.StatMany(ctx, keys, each)
	}
	for i, k := range keys {
		if err := ctx.Err(); err != nil {
			return err
		}
		o, err := st.Stat(ctx, k)
		if err := each(i, o, err); err != nil {
			return err
		}
	}
	return nil
}
