package vstore

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiss-cache/kiss/storage"
)

// Kinds of generated objects.
type kind uint8

const (
	kNone kind = iota
	kNarinfo
	kLs
	kNAR
	kLog
	kMarker
	kCacheInfo
	kOverlay // not generated: written with Put
	numKinds
)

var kindNames = [numKinds]string{"", "narinfo", "ls", "nar", "log", "marker", "nix-cache-info", "other"}

type ref struct {
	k kind
	i uint64 // narinfo slot, NAR slot, output (log), root (marker)
}

// S3 operations, as counted.
const (
	opGet = iota
	opHead
	opPut
	opDelete
	opList
	opDeleteBatch
	numOps
)

var opNames = [numOps]string{"GetObject", "HeadObject", "PutObject", "DeleteObject", "ListObjectsV2", "DeleteObjects"}

// Store is the virtual cache. It is safe for concurrent use.
type Store struct {
	cfg     Config
	g       *gen
	created time.Time

	mu      sync.RWMutex
	overlay map[string]*ovObj
	etagSeq uint64

	del [numKinds]bitset

	counts      [numOps][numKinds]atomic.Int64
	inventoried atomic.Int64
}

type ovObj struct {
	Size  int64     `json:"size"`
	Mod   time.Time `json:"mtime"`
	ETag  string    `json:"etag"`
	File  string    `json:"file,omitempty"` // body in StateDir
	data  []byte
	valid bool
}

var (
	_ storage.Store      = (*Store)(nil)
	_ storage.PageLister = (*Store)(nil)
)

// New creates the virtual cache described by c (and loads c.StateDir).
func New(c Config) (*Store, error) {
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("vstore: %w", err)
	}
	g := newGen(c)
	s := &Store{cfg: c, g: g, created: time.Now(), overlay: map[string]*ovObj{}}
	s.del[kNarinfo] = newBitset(g.niSlots)
	s.del[kLs] = newBitset(g.niSlots)
	s.del[kNAR] = newBitset(g.narSlots)
	s.del[kLog] = newBitset(g.outputs)
	s.del[kMarker] = newBitset(g.roots)
	s.del[kCacheInfo] = newBitset(1)
	if c.StateDir != "" {
		if err := s.load(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Config is the configuration with its defaults filled in.
func (s *Store) Config() Config { return s.cfg }

// Requests counts requests by S3 operation ("GetObject") and by operation
// and kind of key ("GetObject narinfo"); storage.Counting reports them as
// "http:…".
func (s *Store) Requests() map[string]int64 {
	out := map[string]int64{}
	for op := range numOps {
		var total int64
		for k := range numKinds {
			n := s.counts[op][k].Load()
			if n == 0 {
				continue
			}
			total += n
			if k != kNone {
				out[opNames[op]+" "+kindNames[k]] = n
			}
		}
		if total > 0 {
			out[opNames[op]] = total
		}
	}
	return out
}

// ResetRequests zeroes the request counts.
func (s *Store) ResetRequests() {
	for op := range numOps {
		for k := range numKinds {
			s.counts[op][k].Store(0)
		}
	}
}

func (s *Store) request(ctx context.Context, op int, k kind, n int64) error {
	s.counts[op][k].Add(n)
	var d time.Duration
	switch op {
	case opGet:
		d = s.cfg.Latency.Get
	case opHead:
		d = s.cfg.Latency.Head
	case opPut:
		d = s.cfg.Latency.Put
	case opDelete:
		d = s.cfg.Latency.Delete
	case opList:
		d = s.cfg.Latency.ListPage
	case opDeleteBatch:
		d = s.cfg.Latency.DeleteBatch
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return ctx.Err()
}

// parse maps a key to the generated object it names (kNone if none does;
// ok says the generator has it, deleted or not).
func (s *Store) parse(key string) (ref, bool) {
	g := s.g
	switch {
	case len(key) == 40 && strings.HasSuffix(key, ".narinfo"):
		sl, ok := g.niSlotOf(key[:32])
		return ref{kNarinfo, sl}, ok && g.niExists(sl)
	case len(key) == 35 && strings.HasSuffix(key, ".ls"):
		sl, ok := g.niSlotOf(key[:32])
		return ref{kLs, sl}, ok && g.niExists(sl) && g.hasLs(sl)
	case len(key) == narKeyLen && strings.HasPrefix(key, "nar/") && strings.HasSuffix(key, ".nar.zst"):
		n, ok := g.narSlotOf(key[4:56])
		return ref{kNAR, n}, ok && g.narExists(n)
	case strings.HasPrefix(key, "log/") && len(key) > 4+33:
		sl, ok := g.niSlotOf(key[4:36])
		if !ok || sl&1 == 0 || !g.hasLog(sl>>1) {
			return ref{}, false
		}
		return ref{kLog, sl >> 1}, string(g.logKey(nil, sl>>1)) == key
	case key == "nix-cache-info":
		return ref{kCacheInfo, 0}, true
	case strings.HasPrefix(key, "gcroots/host-"):
		for r := range int(g.roots) {
			if markerKey(r) == key {
				return ref{kMarker, uint64(r)}, true
			}
		}
	}
	return ref{}, false
}

// attrs of a generated object.
func (s *Store) attrs(r ref, scratch, refs []uint64) (storage.Object, []uint64, []uint64) {
	g := s.g
	var o storage.Object
	switch r.k {
	case kNarinfo:
		var n int
		n, scratch, refs = g.narinfoLen(r.i, scratch, refs)
		o.Size, o.ModTime = int64(n), g.mtime(r.i>>1, r.i)
	case kLs:
		o.Size, o.ModTime = int64(g.lsLen(r.i)), g.mtime(r.i>>1, r.i)
	case kNAR:
		owner := g.outputs // orphans belong to no output
		if r.i < g.niSlots {
			owner = r.i >> 1
		}
		o.Size, o.ModTime = int64(g.fileSize(r.i)), g.mtime(owner, r.i|1<<61)
	case kLog:
		o.Size, o.ModTime = int64(g.logLen(r.i)), g.mtime(r.i, r.i|1<<60)
	case kMarker:
		o.Size, o.ModTime = int64(len(g.marker(r.i))), g.now.Add(-24*time.Hour)
	case kCacheInfo:
		o.Size, o.ModTime = int64(len(CacheInfo)), g.now.Add(-2*g.age)
	}
	o.ETag = string(appendETag(nil, g.rnd(tagEtag, uint64(r.k)<<58^r.i)))
	return o, scratch, refs
}

func (s *Store) body(r ref) []byte {
	g := s.g
	switch r.k {
	case kNarinfo:
		b, _, _ := g.narinfo(make([]byte, 0, 2048), r.i, nil, nil)
		return b
	case kLs:
		return g.ls(nil, r.i)
	case kLog:
		return g.logBody(nil, r.i)
	case kMarker:
		return g.marker(r.i)
	case kCacheInfo:
		return []byte(CacheInfo)
	}
	return nil
}

// lookup finds key: an overlay object, a live generated one, or neither.
func (s *Store) lookup(key string) (ov *ovObj, r ref, found bool) {
	s.mu.RLock()
	ov = s.overlay[key]
	s.mu.RUnlock()
	if ov != nil {
		return ov, ref{k: kOverlay}, true
	}
	r, ok := s.parse(key)
	if !ok || s.del[r.k].get(r.i) {
		return nil, r, false
	}
	return nil, r, true
}

func kindOf(r ref, found bool) kind {
	if !found && r.k == kNone {
		return kOverlay
	}
	return r.k
}

func (s *Store) Stat(ctx context.Context, key string) (storage.Object, error) {
	ov, r, found := s.lookup(key)
	if err := s.request(ctx, opHead, kindOf(r, found), 1); err != nil {
		return storage.Object{}, err
	}
	if !found {
		return storage.Object{}, fmt.Errorf("vstore stat %q: %w", key, storage.ErrNotFound)
	}
	if ov != nil {
		return storage.Object{Key: key, Size: ov.Size, ModTime: ov.Mod, ETag: ov.ETag}, nil
	}
	o, _, _ := s.attrs(r, nil, nil)
	o.Key = key
	return o, nil
}

type reader struct {
	io.Reader
	obj  storage.Object
	file *os.File
}

func (r *reader) Object() storage.Object { return r.obj }
func (r *reader) Close() error {
	if r.file != nil {
		return r.file.Close()
	}
	return nil
}

// fileReader is a reader over an overlay file: callers may use the file
// itself (storage.FileReader), e.g. to map a large memo.
type fileReader struct{ *reader }

func (r fileReader) File() *os.File { return r.file }

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func (s *Store) Get(ctx context.Context, key string) (storage.Reader, error) {
	return s.GetRange(ctx, key, 0, -1)
}

func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (storage.Reader, error) {
	ov, r, found := s.lookup(key)
	if err := s.request(ctx, opGet, kindOf(r, found), 1); err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("vstore get %q: %w", key, storage.ErrNotFound)
	}
	var obj storage.Object
	var body io.Reader
	var file *os.File
	if ov != nil {
		obj = storage.Object{Key: key, Size: ov.Size, ModTime: ov.Mod, ETag: ov.ETag}
		if ov.File != "" {
			f, err := os.Open(filepath.Join(s.cfg.StateDir, ov.File))
			if err != nil {
				return nil, fmt.Errorf("vstore get %q: %w", key, err)
			}
			file = f
			body = io.NewSectionReader(f, 0, ov.Size)
		} else {
			body = bytes.NewReader(ov.data)
		}
	} else {
		obj, _, _ = s.attrs(r, nil, nil)
		obj.Key = key
		if r.k == kNAR {
			body = io.LimitReader(zeros{}, obj.Size)
		} else {
			body = bytes.NewReader(s.body(r))
		}
	}
	if offset > 0 || length >= 0 {
		if offset > obj.Size {
			offset = obj.Size
		}
		if _, err := io.CopyN(io.Discard, body, offset); err != nil {
			return nil, err
		}
		if length >= 0 {
			body = io.LimitReader(body, length)
		}
	}
	rd := &reader{Reader: body, obj: obj, file: file}
	if file != nil && offset == 0 && length < 0 {
		return fileReader{rd}, nil
	}
	return rd, nil
}

func (s *Store) Put(ctx context.Context, key string, body io.Reader, opts storage.PutOptions) (storage.Object, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.Object{}, err
	}
	if err := s.request(ctx, opPut, kOverlay, 1); err != nil {
		return storage.Object{}, err
	}
	ov := &ovObj{}
	var tmp *os.File
	if s.cfg.StateDir != "" {
		f, err := os.CreateTemp(filepath.Join(s.cfg.StateDir, "obj"), "put-*")
		if err != nil {
			return storage.Object{}, err
		}
		tmp = f
		n, err := io.Copy(f, body)
		if err == nil {
			err = f.Close()
		}
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			return storage.Object{}, fmt.Errorf("vstore put %q: %w", key, err)
		}
		ov.Size = n
	} else {
		data, err := io.ReadAll(body)
		if err != nil {
			return storage.Object{}, fmt.Errorf("vstore put %q: %w", key, err)
		}
		ov.data, ov.Size = data, int64(len(data))
	}
	drop := func() {
		if tmp != nil {
			os.Remove(tmp.Name())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, exists := s.currentLocked(key)
	switch {
	case opts.IfNotExist && exists:
		drop()
		return storage.Object{}, fmt.Errorf("vstore put %q: %w", key, storage.ErrPreconditionFailed)
	case opts.IfMatch != "" && !exists:
		drop()
		return storage.Object{}, fmt.Errorf("vstore put %q: %w", key, storage.ErrNotFound)
	case opts.IfMatch != "" && cur.ETag != opts.IfMatch:
		drop()
		return storage.Object{}, fmt.Errorf("vstore put %q: %w", key, storage.ErrPreconditionFailed)
	}
	s.etagSeq++
	ov.Mod = s.nowLocked()
	ov.ETag = fmt.Sprintf(`"v%d-%d"`, s.created.UnixNano(), s.etagSeq)
	if tmp != nil {
		ov.File = filepath.Join("obj", hex.EncodeToString([]byte(key)))
		if err := os.Rename(tmp.Name(), filepath.Join(s.cfg.StateDir, ov.File)); err != nil {
			drop()
			return storage.Object{}, err
		}
	}
	s.overlay[key] = ov
	if err := s.saveOverlayLocked(); err != nil {
		return storage.Object{}, err
	}
	return storage.Object{Key: key, Size: ov.Size, ModTime: ov.Mod, ETag: ov.ETag}, nil
}

// currentLocked is key's current attributes (lock held).
func (s *Store) currentLocked(key string) (storage.Object, bool) {
	if ov := s.overlay[key]; ov != nil {
		return storage.Object{Key: key, Size: ov.Size, ModTime: ov.Mod, ETag: ov.ETag}, true
	}
	r, ok := s.parse(key)
	if !ok || s.del[r.k].get(r.i) {
		return storage.Object{}, false
	}
	o, _, _ := s.attrs(r, nil, nil)
	return o, true
}

func (s *Store) Delete(ctx context.Context, key string, opts storage.DeleteOptions) error {
	if err := s.request(ctx, opDelete, kOverlay, 1); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if opts.IfMatch != "" {
		cur, ok := s.currentLocked(key)
		if !ok {
			return fmt.Errorf("vstore delete %q: %w", key, storage.ErrNotFound)
		}
		if cur.ETag != opts.IfMatch {
			return fmt.Errorf("vstore delete %q: %w", key, storage.ErrPreconditionFailed)
		}
	}
	return s.deleteLocked(key)
}

func (s *Store) deleteLocked(key string) error {
	if ov := s.overlay[key]; ov != nil {
		delete(s.overlay, key)
		if ov.File != "" {
			os.Remove(filepath.Join(s.cfg.StateDir, ov.File))
		}
		if err := s.saveOverlayLocked(); err != nil {
			return err
		}
	}
	if r, ok := s.parse(key); ok {
		s.del[r.k].set(r.i)
	}
	return nil
}

func (s *Store) DeleteMany(ctx context.Context, keys []string) error {
	for start := 0; start < len(keys); start += storage.PageSize {
		if err := s.request(ctx, opDeleteBatch, kNone, 1); err != nil {
			return err
		}
		batch := keys[start:min(start+storage.PageSize, len(keys))]
		var overlaid []string
		for _, k := range batch {
			if r, ok := s.parse(k); ok {
				s.del[r.k].set(r.i)
			} else {
				overlaid = append(overlaid, k)
			}
		}
		if len(overlaid) > 0 {
			s.mu.Lock()
			for _, k := range overlaid {
				if err := s.deleteLocked(k); err != nil {
					s.mu.Unlock()
					return err
				}
			}
			s.mu.Unlock()
		}
	}
	return nil
}

func (s *Store) nowLocked() time.Time { return s.cfg.Now.Add(time.Since(s.created)).Round(0) }

func (s *Store) Now(context.Context) (time.Time, error) { return s.nowLocked(), nil }

func (s *Store) Capabilities() storage.Capabilities {
	return storage.Capabilities{AtomicCreate: true, CompareAndSwap: true, ConditionalDelete: true, MaxBatchDelete: storage.PageSize, DeleteParallel: 4}
}

func (s *Store) URL() string {
	return fmt.Sprintf("vstore://%d?seed=%d", s.cfg.Paths, s.cfg.Seed)
}

// Close saves the deletions in StateDir, if there is one.
func (s *Store) Close() error {
	if s.cfg.StateDir == "" {
		return nil
	}
	f, err := os.Create(filepath.Join(s.cfg.StateDir, "deleted.tmp"))
	if err != nil {
		return err
	}
	w := io.Writer(f)
	for k := range numKinds {
		if err := s.del[k].writeTo(w); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(s.cfg.StateDir, "deleted"))
}

func (s *Store) saveOverlayLocked() error {
	if s.cfg.StateDir == "" {
		return nil
	}
	idx := map[string]*ovObj{}
	for k, o := range s.overlay {
		if o.File == "" {
			// Small bodies go in the index itself.
			c := *o
			c.File = "inline:" + hex.EncodeToString(o.data)
			idx[k] = &c
			continue
		}
		idx[k] = o
	}
	data, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.cfg.StateDir, "overlay.tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.cfg.StateDir, "overlay.json"))
}

func (s *Store) load() error {
	dir := s.cfg.StateDir
	if err := os.MkdirAll(filepath.Join(dir, "obj"), 0o755); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(dir, "overlay.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	default:
		idx := map[string]*ovObj{}
		if err := json.Unmarshal(data, &idx); err != nil {
			return fmt.Errorf("vstore: %s: %w", dir, err)
		}
		for _, o := range idx {
			if h, ok := strings.CutPrefix(o.File, "inline:"); ok {
				if o.data, err = hex.DecodeString(h); err != nil {
					return fmt.Errorf("vstore: %s: %w", dir, err)
				}
				o.File = ""
			}
		}
		s.overlay = idx
	}
	f, err := os.Open(filepath.Join(dir, "deleted"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	for k := range numKinds {
		if err := s.del[k].readFrom(f); err != nil {
			return fmt.Errorf("vstore: %s/deleted: %w", dir, err)
		}
	}
	return nil
}

// Listing.

func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
	return func(yield func(storage.Object, error) bool) {
		after := ""
		for {
			objs, more, err := s.ListPage(ctx, prefix, after, storage.PageSize)
			if err != nil {
				yield(storage.Object{}, err)
				return
			}
			for _, o := range objs {
				if !yield(o, nil) {
					return
				}
			}
			if !more || len(objs) == 0 {
				return
			}
			after = objs[len(objs)-1].Key
		}
	}
}

// ListPage lists like ListObjectsV2 with StartAfter: a merge of the sorted
// streams of generated keys (top level, nar/, log/, markers) and of the
// overlay, each positioned by binary search on its rank.
func (s *Store) ListPage(ctx context.Context, prefix, startAfter string, limit int) ([]storage.Object, bool, error) {
	if err := s.request(ctx, opList, kNone, 1); err != nil {
		return nil, false, err
	}
	return s.listPage(prefix, startAfter, limit)
}

func (s *Store) listPage(prefix, startAfter string, limit int) ([]storage.Object, bool, error) {
	s.mu.RLock()
	ovKeys := make([]string, 0, len(s.overlay))
	for k := range s.overlay {
		if strings.HasPrefix(k, prefix) && k > startAfter {
			ovKeys = append(ovKeys, k)
		}
	}
	s.mu.RUnlock()
	slices.Sort(ovKeys)
	streams := []*stream{
		s.topStream(), s.narStream(), s.logStream(), s.staticStream(), {keys: ovKeys, over: true},
	}
	for _, st := range streams {
		st.prefix = prefix
		st.seek(startAfter)
	}
	var out []storage.Object
	var scratch, refs []uint64
	for len(out) < limit {
		var best *stream
		for _, st := range streams {
			if st.ok && (best == nil || bytes.Compare(st.cur, best.cur) < 0 || st.over && bytes.Equal(st.cur, best.cur)) {
				best = st
			}
		}
		if best == nil {
			return out, false, nil
		}
		key := string(best.cur)
		var o storage.Object
		if best.over {
			s.mu.RLock()
			ov := s.overlay[key]
			s.mu.RUnlock()
			if ov != nil {
				o = storage.Object{Key: key, Size: ov.Size, ModTime: ov.Mod, ETag: ov.ETag}
			}
		} else {
			o, scratch, refs = s.attrs(best.ref, scratch, refs)
			o.Key = key
		}
		for _, st := range streams {
			if st != best && st.ok && bytes.Equal(st.cur, best.cur) {
				st.advance()
			}
		}
		best.advance()
		if o.Key != "" {
			out = append(out, o)
		}
	}
	for _, st := range streams {
		if st.ok {
			return out, true, nil
		}
	}
	return out, false, nil
}

// stream is one sorted sequence of keys: ranks of a permutation mapped to
// objects (gen), or a sorted slice (keys).
type stream struct {
	prefix string
	ok     bool
	cur    []byte
	ref    ref

	// By rank: at(rank, sub) renders the key at that position (ok false if
	// nothing is there); n ranks, each with up to subs keys in order.
	n    uint64
	subs int
	at   func(buf []byte, rank uint64, sub int) ([]byte, ref, bool)
	// keyOf renders the position key of a rank, for the binary search (the
	// key of its last sub-position, which every other sorts before).
	keyOf     func(buf []byte, rank uint64) []byte
	rank      uint64
	sub       int
	keys      []string
	i         int
	over      bool
	searchBuf []byte
	renderBuf []byte
}

func (st *stream) seek(after string) {
	lo := after
	if st.prefix > lo {
		lo = st.prefix
	}
	incl := st.prefix > after // the prefix itself may be a key
	if st.keys != nil || st.at == nil {
		st.i = sortSearch(len(st.keys), func(i int) bool {
			return st.keys[i] > lo || incl && st.keys[i] == lo
		})
		st.fill()
		return
	}
	st.rank = sortSearchU(st.n, func(r uint64) bool {
		st.searchBuf = st.keyOf(st.searchBuf[:0], r)
		c := strings.Compare(string(st.searchBuf), lo)
		return c > 0 || incl && c == 0
	})
	st.sub = 0
	// Skip sub-positions of the first rank at or before lo.
	for {
		st.fill()
		if !st.ok {
			return
		}
		c := strings.Compare(string(st.cur), lo)
		if c > 0 || incl && c == 0 {
			return
		}
		st.step()
	}
}

// fill positions cur at the first present key at or after (rank, sub).
func (st *stream) fill() {
	if st.at == nil {
		for st.i < len(st.keys) {
			st.cur = append(st.cur[:0], st.keys[st.i]...)
			st.ok = strings.HasPrefix(st.keys[st.i], st.prefix)
			return
		}
		st.ok = false
		return
	}
	for st.rank < st.n {
		var ok bool
		st.renderBuf, st.ref, ok = st.at(st.renderBuf[:0], st.rank, st.sub)
		if ok {
			st.cur = append(st.cur[:0], st.renderBuf...)
			st.ok = bytes.HasPrefix(st.cur, []byte(st.prefix))
			return
		}
		st.step()
	}
	st.ok = false
}

func (st *stream) step() {
	if st.at == nil {
		st.i++
		return
	}
	st.sub++
	if st.sub >= st.subs {
		st.sub = 0
		st.rank++
	}
}

func (st *stream) advance() { st.step(); st.fill() }

func sortSearch(n int, f func(int) bool) int {
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !f(m) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func sortSearchU(n uint64, f func(uint64) bool) uint64 {
	lo, hi := uint64(0), n
	for lo < hi {
		m := lo + (hi-lo)/2
		if !f(m) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// topStream: per narinfo rank, "<hash>.ls" then "<hash>.narinfo".
func (s *Store) topStream() *stream {
	g := s.g
	return &stream{
		n: g.niSlots, subs: 2,
		keyOf: func(b []byte, rank uint64) []byte {
			var h [32]byte
			g.niHash(h[:], g.niSlotOfRank(rank))
			b = append(b, h[:]...)
			return append(b, ".narinfo"...)
		},
		at: func(b []byte, rank uint64, sub int) ([]byte, ref, bool) {
			sl := g.niSlotOfRank(rank)
			if !g.niExists(sl) {
				return b, ref{}, false
			}
			k := kNarinfo
			if sub == 0 {
				if !g.hasLs(sl) {
					return b, ref{}, false
				}
				k = kLs
			}
			if s.del[k].get(sl) {
				return b, ref{}, false
			}
			var h [32]byte
			g.niHash(h[:], sl)
			b = append(b, h[:]...)
			if k == kLs {
				return append(b, ".ls"...), ref{kLs, sl}, true
			}
			return append(b, ".narinfo"...), ref{kNarinfo, sl}, true
		},
	}
}

func (s *Store) narStream() *stream {
	g := s.g
	return &stream{
		n: g.narSlots, subs: 1,
		keyOf: func(b []byte, rank uint64) []byte { return appendNARKey(b, g, g.narPerm.inv(rank)) },
		at: func(b []byte, rank uint64, _ int) ([]byte, ref, bool) {
			n := g.narPerm.inv(rank)
			if !g.narExists(n) || s.del[kNAR].get(n) {
				return b, ref{}, false
			}
			return appendNARKey(b, g, n), ref{kNAR, n}, true
		},
	}
}

func (s *Store) logStream() *stream {
	g := s.g
	return &stream{
		n: g.niSlots, subs: 1,
		keyOf: func(b []byte, rank uint64) []byte {
			// A .drv slot's key is its log key; an output slot's, its bare
			// hash (sorts where that rank is).
			sl := g.niSlotOfRank(rank)
			b = g.appendSlotBase(append(b, "log/"...), sl)
			if sl&1 == 0 {
				b = b[:4+32]
			}
			return b
		},
		at: func(b []byte, rank uint64, _ int) ([]byte, ref, bool) {
			sl := g.niSlotOfRank(rank)
			if sl&1 == 0 || !g.hasLog(sl>>1) || s.del[kLog].get(sl>>1) {
				return b, ref{}, false
			}
			return g.logKey(b, sl>>1), ref{kLog, sl >> 1}, true
		},
	}
}

func (s *Store) staticStream() *stream {
	type kv struct {
		key string
		r   ref
	}
	var all []kv
	if !s.del[kCacheInfo].get(0) {
		all = append(all, kv{"nix-cache-info", ref{kCacheInfo, 0}})
	}
	for r := range int(s.g.roots) {
		if !s.del[kMarker].get(uint64(r)) {
			all = append(all, kv{markerKey(r), ref{kMarker, uint64(r)}})
		}
	}
	slices.SortFunc(all, func(a, b kv) int { return strings.Compare(a.key, b.key) })
	st := &stream{n: uint64(len(all)), subs: 1}
	st.keyOf = func(b []byte, rank uint64) []byte { return append(b, all[rank].key...) }
	st.at = func(b []byte, rank uint64, _ int) ([]byte, ref, bool) {
		return append(b, all[rank].key...), all[rank].r, true
	}
	return st
}

// bitset marks deleted objects; set and get are atomic.
type bitset []atomic.Uint64

func newBitset(n uint64) bitset { return make(bitset, (n+63)/64) }

func (b bitset) get(i uint64) bool {
	w := i / 64
	return w < uint64(len(b)) && b[w].Load()&(1<<(i%64)) != 0
}

func (b bitset) set(i uint64) { b[i/64].Or(1 << (i % 64)) }

func (b bitset) writeTo(w io.Writer) error {
	buf := make([]byte, 0, 1<<16)
	for i := range b {
		v := b[i].Load()
		buf = append(buf, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
		if len(buf) == cap(buf) {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	_, err := w.Write(buf)
	return err
}

func (b bitset) readFrom(r io.Reader) error {
	buf := make([]byte, 8)
	for i := range b {
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		var v uint64
		for j := 7; j >= 0; j-- {
			v = v<<8 | uint64(buf[j])
		}
		b[i].Store(v)
	}
	return nil
}

// ForgetDeletions undoes every deletion (the overlay stays): a benchmark
// runs a warm dry run on the unpruned cache with the memo of a real prune.
func (s *Store) ForgetDeletions() {
	for k := range numKinds {
		for i := range s.del[k] {
			s.del[k][i].Store(0)
		}
	}
}

// Snapshot is what an S3 Inventory report of the virtual cache taken at its
// creation lists below the top level (nar/, log/, gcroots/): a gc.Snapshot.
// Reading it costs no request; Store.InventoryObjects counts what it listed
// (S3 bills an inventory by objects listed).
type Snapshot struct{ s *Store }

// Snapshot returns the cache's inventory report.
func (s *Store) Snapshot() Snapshot { return Snapshot{s} }

// Taken is the store's creation time (Config.Now).
func (sn Snapshot) Taken() time.Time { return sn.s.cfg.Now }

// Objects yields the report's objects in batches.
func (sn Snapshot) Objects(ctx context.Context) iter.Seq2[[]storage.Object, error] {
	return func(yield func([]storage.Object, error) bool) {
		for _, prefix := range []string{"gcroots/", "log/", "nar/"} {
			after := ""
			for {
				if err := ctx.Err(); err != nil {
					yield(nil, err)
					return
				}
				objs, more, err := sn.s.listPage(prefix, after, storage.PageSize)
				if err != nil {
					yield(nil, err)
					return
				}
				sn.s.inventoried.Add(int64(len(objs)))
				if len(objs) > 0 && !yield(objs, nil) {
					return
				}
				if !more || len(objs) == 0 {
					break
				}
				after = objs[len(objs)-1].Key
			}
		}
	}
}

// InventoryObjects is how many objects Snapshot listed.
func (s *Store) InventoryObjects() int64 { return s.inventoried.Load() }
