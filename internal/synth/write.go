package synth

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiss-cache/kiss/storage"
)

// Class says what a prune is expected to do with an object.
type Class uint8

const (
	// Live objects are reachable from a marker (or are markers, or
	// nix-cache-info): a prune must keep them.
	Live Class = iota
	// Newborn objects are unreachable but younger than any grace period:
	// a prune with a grace period keeps them, one with grace 0 may delete them.
	Newborn
	// Garbage objects are unreachable and old: a prune should delete them.
	Garbage
)

func (c Class) String() string {
	switch c {
	case Live:
		return "live"
	case Newborn:
		return "newborn"
	default:
		return "garbage"
	}
}

// objKind enumerates object types; an object is (kind, index).
type objKind uint8

const (
	objCacheInfo objKind = iota
	objMarker
	objNarinfo
	objNAR
	objLs
	objLog
)

type objRef struct {
	kind objKind
	idx  int32
}

// Object is one rendered object of the cache.
type Object struct {
	Key   string
	Body  []byte
	Class Class
	// ModTime is the mtime the file writer gives it.
	ModTime time.Time
	// Type is "narinfo", "nar", "ls", "log", "marker" or "cache-info".
	Type string
}

func (c *Cache) refs() []objRef {
	refs := []objRef{{objCacheInfo, 0}}
	for r := range c.Systems {
		refs = append(refs, objRef{objMarker, int32(r)})
	}
	for i := range c.Paths {
		refs = append(refs, objRef{objNarinfo, int32(i)})
		if c.Paths[i].Ls {
			refs = append(refs, objRef{objLs, int32(i)})
		}
		if c.Paths[i].Log {
			refs = append(refs, objRef{objLog, int32(i)})
		}
	}
	for n := range c.NARs {
		refs = append(refs, objRef{objNAR, int32(n)})
	}
	return refs
}

func (c *Cache) class(reachable, newborn bool) Class {
	switch {
	case reachable:
		return Live
	case newborn:
		return Newborn
	default:
		return Garbage
	}
}

// modTime spreads old objects over [Now-2*Age, Now-Age] deterministically;
// markers are a day old, newborns are Now.
func (c *Cache) modTime(newborn bool, k objKind, idx int32) time.Time {
	if newborn {
		return c.Config.Now
	}
	if k == objMarker {
		// Deploys refresh their markers: a day old, well inside any
		// --root-max-age, so the roots do not expire in a benchmark.
		return c.Config.Now.Add(-24 * time.Hour)
	}
	spread := uint64(c.Config.Age / time.Second)
	h := (uint64(idx)*0x9e3779b97f4a7c15 ^ uint64(k)<<56) % max(spread, 1)
	return c.Config.Now.Add(-c.Config.Age - time.Duration(h)*time.Second)
}

// keyOnly describes an object without rendering its body.
func (c *Cache) keyOnly(r objRef) (key, typ string, class Class, newborn bool) {
	i := int(r.idx)
	switch r.kind {
	case objCacheInfo:
		return "nix-cache-info", "cache-info", Live, false
	case objMarker:
		return c.MarkerKey(i), "marker", Live, false
	case objNarinfo:
		p := &c.Paths[i]
		return c.NarinfoKey(i), "narinfo", c.class(p.Reachable, p.Newborn), p.Newborn
	case objLs:
		p := &c.Paths[i]
		return c.LsKey(i), "ls", c.class(p.Reachable, p.Newborn), p.Newborn
	case objLog:
		p := &c.Paths[i]
		return c.LogKey(i), "log", c.class(p.Reachable, p.Newborn), p.Newborn
	default:
		n := &c.NARs[i]
		return c.NARKey(i), "nar", c.class(n.Live, n.Newborn), n.Newborn
	}
}

func (c *Cache) render(r objRef) Object {
	key, typ, class, newborn := c.keyOnly(r)
	o := Object{Key: key, Type: typ, Class: class, ModTime: c.modTime(newborn, r.kind, r.idx)}
	i := int(r.idx)
	switch r.kind {
	case objCacheInfo:
		o.Body = []byte(NixCacheInfo)
	case objMarker:
		o.Body = c.Marker(i)
	case objNarinfo:
		o.Body = c.Narinfo(i)
	case objLs:
		o.Body = c.Ls(i)
	case objLog:
		o.Body = c.Log(i)
	default:
		o.Body = c.NARBody(i)
	}
	return o
}

// Objects calls fn for every object of the cache, in a fixed order. A shared
// NAR appears once.
func (c *Cache) Objects(fn func(Object) error) error {
	for _, r := range c.refs() {
		if err := fn(c.render(r)); err != nil {
			return err
		}
	}
	return nil
}

// Progress is told how many objects have been written so far.
type Progress func(done, total int)

// parallel renders every object on workers goroutines and hands it to put.
func (c *Cache) parallel(ctx context.Context, workers int, progress Progress, put func(context.Context, Object) error) error {
	refs := c.refs()
	workers = max(workers, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		done     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(refs) || ctx.Err() != nil {
					return
				}
				if err := put(ctx, c.render(refs[i])); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				d := int(done.Add(1))
				if progress != nil && (d%10000 == 0 || d == len(refs)) {
					progress(d, len(refs))
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// WriteStore writes the cache through st with workers parallel Puts. Stores
// set their own mtimes, so every object is "newborn" there: prune such a
// cache with a grace period of 0.
func (c *Cache) WriteStore(ctx context.Context, st storage.Store, workers int, progress Progress) error {
	return c.parallel(ctx, workers, progress, func(ctx context.Context, o Object) error {
		_, err := st.Put(ctx, o.Key, bytes.NewReader(o.Body), storage.PutOptions{})
		if err != nil {
			return fmt.Errorf("synth: write %s: %w", o.Key, err)
		}
		return nil
	})
}

// WriteDir is the fast path for file:// stores: it writes the objects as
// plain files under dir (the layout storage.OpenFile serves) and sets their
// mtimes, so old objects are older than a grace period and newborns are not.
// dir must not exist or be empty.
func (c *Cache) WriteDir(ctx context.Context, dir string, workers int, progress Progress) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("synth: %s is not empty", dir)
	}
	for _, d := range []string{"", "nar", "log", "gcroots"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
	}
	return c.parallel(ctx, workers, progress, func(_ context.Context, o Object) error {
		p := filepath.Join(dir, filepath.FromSlash(o.Key))
		if err := os.WriteFile(p, o.Body, 0o644); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
		if err := os.Chtimes(p, o.ModTime, o.ModTime); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
		return nil
	})
}

// Summary counts what the cache holds and what a prune should do.
type Summary struct {
	Seed      uint64 `json:"seed"`
	Narinfos  int    `json:"narinfos"`
	Reachable int    `json:"reachable_narinfos"`
	// Objects by class and type, e.g. Counts["garbage"]["nar"].
	Counts map[string]map[string]int `json:"counts"`
	// Bytes of object bodies written, by class.
	Bytes map[string]int64 `json:"bytes"`
	// FileSizeLive/Garbage sum the FileSize the narinfos claim.
	FileSizeLive    int64   `json:"filesize_live"`
	FileSizeGarbage int64   `json:"filesize_garbage"`
	MeanNarinfo     float64 `json:"mean_narinfo_bytes"`
	MeanRefs        float64 `json:"mean_references"`
	MaxDepth        int     `json:"max_depth"`
	Roots           int     `json:"roots"`
	SharedNARs      int     `json:"shared_nars"`
}

// Summarize renders every object once to count it (a few seconds at 1M).
func (c *Cache) Summarize() Summary {
	s := Summary{Seed: c.Config.Seed, Narinfos: len(c.Paths), Counts: map[string]map[string]int{},
		Bytes: map[string]int64{}, MaxDepth: c.MaxDepth, Roots: len(c.Systems)}
	var narinfoBytes, refs int64
	users := make([]int32, len(c.NARs))
	for i := range c.Paths {
		p := &c.Paths[i]
		users[p.NAR]++
		refs += int64(len(p.Refs))
		if p.Reachable {
			s.Reachable++
		}
	}
	for _, u := range users {
		if u > 1 {
			s.SharedNARs++
		}
	}
	for _, r := range c.refs() {
		o := c.render(r)
		cl := o.Class.String()
		if s.Counts[cl] == nil {
			s.Counts[cl] = map[string]int{}
		}
		s.Counts[cl][o.Type]++
		s.Bytes[cl] += int64(len(o.Body))
		if o.Type == "narinfo" {
			narinfoBytes += int64(len(o.Body))
		}
		if r.kind == objNAR {
			if o.Class == Live {
				s.FileSizeLive += c.NARs[r.idx].FileSize
			} else {
				s.FileSizeGarbage += c.NARs[r.idx].FileSize
			}
		}
	}
	s.MeanNarinfo = float64(narinfoBytes) / float64(len(c.Paths))
	s.MeanRefs = float64(refs) / float64(len(c.Paths))
	return s
}

// Manifest file names written by WriteManifest.
const (
	ReachableFile = "reachable-narinfos.txt" // narinfo keys a walk reads (the baseline)
	LiveFile      = "live.txt"               // every key a prune must keep
	NewbornFile   = "newborn.txt"            // unreachable keys younger than any grace
	GarbageFile   = "garbage.txt"            // unreachable old keys a prune should delete
	SummaryFile   = "summary.json"
)

// WriteManifest writes the expected outcome into dir (one key per line).
func (c *Cache) WriteManifest(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	files := map[string]*bufio.Writer{}
	var closers []*os.File
	for _, name := range []string{ReachableFile, LiveFile, NewbornFile, GarbageFile} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("synth: %w", err)
		}
		closers = append(closers, f)
		files[name] = bufio.NewWriterSize(f, 1<<20)
	}
	for _, r := range c.refs() {
		key, typ, class, _ := c.keyOnly(r)
		name := map[Class]string{Live: LiveFile, Newborn: NewbornFile, Garbage: GarbageFile}[class]
		fmt.Fprintln(files[name], key)
		if typ == "narinfo" && class == Live {
			fmt.Fprintln(files[ReachableFile], key)
		}
	}
	var errs []error
	for i, name := range []string{ReachableFile, LiveFile, NewbornFile, GarbageFile} {
		errs = append(errs, files[name].Flush(), closers[i].Close())
	}
	sum, err := json.MarshalIndent(c.Summarize(), "", "  ")
	errs = append(errs, err)
	if err == nil {
		errs = append(errs, os.WriteFile(filepath.Join(dir, SummaryFile), append(sum, '\n'), 0o644))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("synth: manifest: %w", err)
	}
	return nil
}

// ReadKeys reads a manifest file (one key per line).
func ReadKeys(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k := sc.Text(); k != "" {
			keys = append(keys, k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("synth: %s: %w", path, err)
	}
	return keys, nil
}

// ReadResult is what ReadAll did.
type ReadResult struct {
	Objects int
	Bytes   int64
	Elapsed time.Duration
}

// ReadAll is the prune baseline: read every key's bytes once through st with
// workers parallel Gets, keys known in advance. A missing key is an error.
func ReadAll(ctx context.Context, st storage.Store, keys []string, workers int) (ReadResult, error) {
	start := time.Now()
	var res ReadResult
	var bytesRead atomic.Int64
	err := forEach(ctx, keys, workers, func(ctx context.Context, key string) error {
		r, err := st.Get(ctx, key)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, r)
		if cerr := r.Close(); err == nil {
			err = cerr
		}
		bytesRead.Add(n)
		return err
	})
	res.Objects, res.Bytes, res.Elapsed = len(keys), bytesRead.Load(), time.Since(start)
	if err != nil {
		return res, fmt.Errorf("synth: read: %w", err)
	}
	return res, nil
}

// CheckResult compares a pruned store with the manifest.
type CheckResult struct {
	// LiveMissing are keys a prune must have kept but did not (I1/I2 broken).
	LiveMissing []string `json:"live_missing"`
	// NewbornMissing are newborn keys that are gone (fine only with grace 0).
	NewbornMissing int `json:"newborn_missing"`
	// GarbageLeft counts garbage keys still present.
	GarbageLeft  int `json:"garbage_left"`
	GarbageTotal int `json:"garbage_total"`
}

// Check stats every manifest key in st (with workers parallel Stats).
func Check(ctx context.Context, st storage.Store, manifestDir string, workers int) (CheckResult, error) {
	var res CheckResult
	var mu sync.Mutex
	for _, f := range []string{LiveFile, NewbornFile, GarbageFile} {
		keys, err := ReadKeys(filepath.Join(manifestDir, f))
		if err != nil {
			return res, err
		}
		if f == GarbageFile {
			res.GarbageTotal = len(keys)
		}
		err = forEach(ctx, keys, workers, func(ctx context.Context, key string) error {
			_, err := st.Stat(ctx, key)
			present := err == nil
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case f == LiveFile && !present:
				res.LiveMissing = append(res.LiveMissing, key)
			case f == NewbornFile && !present:
				res.NewbornMissing++
			case f == GarbageFile && present:
				res.GarbageLeft++
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("synth: check: %w", err)
		}
	}
	return res, nil
}

func forEach(ctx context.Context, keys []string, workers int, fn func(context.Context, string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range max(workers, 1) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(keys) || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, keys[i]); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
