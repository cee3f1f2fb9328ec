package gc

import (
	"context"
	"fmt"
	"io"

	"github.com/kiss-cache/kiss/storage"
)

// readAll reads at most limit bytes of key; more is an error. It sizes its
// buffer from the object's size, so a narinfo costs one allocation.
func readAll(ctx context.Context, st storage.Store, key string, limit int64) ([]byte, error) {
	data, _, err := readObject(ctx, st, key, limit, nil)
	return data, err
}

// readObject is readAll that also returns the attributes of the version read.
// It reads into buf when that is large enough (the result then aliases it).
func readObject(ctx context.Context, st storage.Store, key string, limit int64, buf []byte) ([]byte, storage.Object, error) {
	r, err := st.Get(ctx, key)
	if err != nil {
		return nil, storage.Object{}, err
	}
	defer r.Close()
	obj := r.Object()
	// A local file is complete once it gave its stat size (objects are
	// replaced, never appended to), so asking for EOF would only cost a
	// syscall per narinfo. A network body is read to EOF, or its
	// connection could not be reused.
	_, local := r.(storage.FileReader)
	data, err := readLimited(r, key, obj.Size, limit, local, buf)
	return data, obj, err
}

func readLimited(r io.Reader, key string, size, limit int64, stopAtSize bool, buf []byte) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", key, limit)
	}
	if int64(cap(buf)) < max(size, 0)+1 {
		buf = make([]byte, 0, max(size, 0)+1)
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, fmt.Errorf("%s: larger than %d bytes", key, limit)
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF || err == nil && stopAtSize && int64(len(buf)) == size {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(buf)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", key, limit)
	}
	return buf, nil
}
