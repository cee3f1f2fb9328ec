package storage

import (
	"context"
	"errors"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Special is an entry of a filesystem store that is not an object: a
// symbolic link, a named pipe, a socket or a device. List and Get never
// show one; a caller that must not overlook anything under a prefix (the
// root registry: a symlink under gcroots/ can be a root) asks for them with
// ListSpecial.
type Special struct {
	Key string
	// Mode holds the entry's type bits (fs.ModeSymlink, fs.ModeNamedPipe, …).
	Mode fs.FileMode
	// Target is a symlink's target as written (readlink(2)), not resolved.
	Target string
	// Path is where the entry is on this host.
	Path    string
	ModTime time.Time
}

// SpecialLister is implemented by stores on a filesystem (file://).
type SpecialLister interface {
	// ListSpecial walks the tree below prefix as List does (directories,
	// symlinked ones not entered) and yields every entry that is neither a
	// directory nor a regular file.
	ListSpecial(ctx context.Context, prefix string) iter.Seq2[Special, error]
}

var _ SpecialLister = (*fileStore)(nil)

func (s *fileStore) ListSpecial(ctx context.Context, prefix string) iter.Seq2[Special, error] {
	return func(yield func(Special, error) bool) {
		if err := ValidatePrefix(prefix); err != nil {
			yield(Special{}, wrap("list", prefix, err))
			return
		}
		stack := []string{startDir(prefix)}
		for len(stack) > 0 {
			if err := ctx.Err(); err != nil {
				yield(Special{}, wrap("list", prefix, err))
				return
			}
			rel := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			dir := filepath.Join(s.root, filepath.FromSlash(rel))
			ents, err := os.ReadDir(dir) // follows a symlinked start directory, as List does
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				continue
			}
			if err != nil {
				yield(Special{}, wrap("list", prefix, err))
				return
			}
			for _, e := range ents {
				key := e.Name()
				if rel != "" {
					key = rel + "/" + key
				}
				switch t := e.Type(); {
				case t.IsDir():
					if matchesDir(key, prefix) {
						stack = append(stack, key)
					}
				case t.IsRegular(), !strings.HasPrefix(key, prefix):
				default:
					sp, err := s.special(key)
					if errors.Is(err, fs.ErrNotExist) {
						continue // gone since the directory was read
					}
					if !yield(sp, err) || err != nil {
						return
					}
				}
			}
		}
	}
}

// special describes one non-object entry, by lstat(2).
func (s *fileStore) special(key string) (Special, error) {
	p := filepath.Join(s.root, filepath.FromSlash(key))
	fi, err := os.Lstat(p)
	if err != nil {
		return Special{}, err
	}
	sp := Special{Key: key, Mode: fi.Mode().Type(), Path: p, ModTime: fi.ModTime()}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if sp.Target, err = os.Readlink(p); err != nil {
			return Special{}, wrap("readlink", key, err)
		}
	}
	return sp, nil
}
