package main

// The floor of a prune on file:// (issue 15's targets): what any pruner
// that honours the grace period (I3), checks its memo and deletes every
// narinfo before any NAR (I2) must do on a generated cache, in raw system
// calls and nothing else:
//
//   - list every directory (getdents(2)), the directories in parallel;
//   - warm: stat every narinfo (a memo entry is checked against its
//     narinfo, and an unreached narinfo's age decides whether it is a
//     root), and every deletion candidate (the garbage that is not a
//     narinfo: nothing younger than the grace period is deleted);
//   - cold: read every reachable narinfo (open, fstat, read, close: its
//     references are what the walk follows), stat the unreached narinfos
//     and the candidates;
//   - with --unlink (on a copy), unlink the garbage in I2's order: the
//     narinfos, then the NARs; the other garbage (.ls, logs) beside them.
//     One thread per directory (the unlinks of one directory serialise on
//     its lock).
//
// Stats run on --jobs threads, each name relative to its directory's
// descriptor (one fstatat(2) per key, as kiss's StatMany).

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func floorCommand() *cli.Command {
	return &cli.Command{
		Name:  "floor",
		Usage: "the least a prune must do on a generated file:// cache: list, stat narinfos and candidates (and --unlink the garbage)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Required: true, Usage: "the generated cache (a copy, with --unlink)"},
			&cli.StringFlag{Name: "manifest", Required: true, Usage: "its manifest (kiss-synth gen --manifest)"},
			&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Value: 2, Usage: "threads for the stats"},
			&cli.BoolFlag{Name: "unlink", Usage: "also unlink every garbage key (destroys the cache: use a cp -al copy)"},
		},
		Action: floor,
	}
}

// dirKey is a name relative to an open directory.
type dirKey struct {
	dir  int
	name string
}

func floor(c *cli.Context) error {
	dir, man := c.String("dir"), c.String("manifest")
	dirs := map[string]int{}
	open := func(d string) (int, error) {
		if fd, ok := dirs[d]; ok {
			return fd, nil
		}
		fd, err := unix.Open(filepath.Join(dir, d), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("floor: %s: %w", d, err)
		}
		dirs[d] = fd
		return fd, nil
	}
	keys := func(file string, keep func(string) bool) ([]dirKey, error) {
		f, err := os.Open(filepath.Join(man, file))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		var out []dirKey
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k := sc.Text()
			if !keep(k) {
				continue
			}
			d, base := "", k
			if i := strings.LastIndexByte(k, '/'); i >= 0 {
				d, base = k[:i], k[i+1:]
			}
			fd, err := open(d)
			if err != nil {
				return nil, err
			}
			out = append(out, dirKey{fd, base})
		}
		return out, sc.Err()
	}
	isNarInfo := func(k string) bool { kind, _ := nixcache.Classify(k); return kind == nixcache.KindNarInfo }
	var narinfos []dirKey
	for _, f := range []string{"live.txt", "garbage.txt", "newborn.txt"} {
		ks, err := keys(f, isNarInfo)
		if err != nil {
			return err
		}
		narinfos = append(narinfos, ks...)
	}
	// A cold walk reads the reachable narinfos and the newborn ones (roots
	// by age) and stats the rest, the garbage narinfos.
	read, err := keys("reachable-narinfos.txt", func(string) bool { return true })
	if err != nil {
		return err
	}
	newborn, err := keys("newborn.txt", isNarInfo)
	if err != nil {
		return err
	}
	read = append(read, newborn...)
	unreached, err := keys("garbage.txt", isNarInfo)
	if err != nil {
		return err
	}
	candidates, err := keys("garbage.txt", func(k string) bool { return !isNarInfo(k) })
	if err != nil {
		return err
	}
	jobs := c.Int("jobs")
	timed := func(fn func() error) (time.Duration, error) {
		t := time.Now()
		err := fn()
		return time.Since(t), err
	}

	var known []string
	for d := range dirs {
		known = append(known, d)
	}
	var names int
	tList, err := timed(func() (err error) { names, err = listTree(dir, known); return err })
	if err != nil {
		return err
	}
	tNarInfos, err := timed(func() error { return statAll(narinfos, jobs) })
	if err != nil {
		return err
	}
	tCand, err := timed(func() error { return statAll(candidates, jobs) })
	if err != nil {
		return err
	}
	tRead, err := timed(func() error { return readAll(read, jobs) })
	if err != nil {
		return err
	}
	tUnreached, err := timed(func() error { return statAll(unreached, jobs) })
	if err != nil {
		return err
	}
	cold := tList + tRead + tUnreached + tCand
	fmt.Printf("list %d names: %.3f s\nstat %d narinfos: %.3f s\nstat %d candidates: %.3f s\nwarm floor (the three): %.3f s\n",
		names, tList.Seconds(), len(narinfos), tNarInfos.Seconds(), len(candidates), tCand.Seconds(), (tList + tNarInfos + tCand).Seconds())
	fmt.Printf("read %d reachable narinfos: %.3f s\nstat %d unreached narinfos: %.3f s\ncold floor (list, read, stat unreached and candidates): %.3f s\n",
		len(read), tRead.Seconds(), len(unreached), tUnreached.Seconds(), cold.Seconds())
	if !c.Bool("unlink") {
		return nil
	}
	garbage, err := keys("garbage.txt", func(string) bool { return true })
	if err != nil {
		return err
	}
	isNAR := func(k string) bool { kind, _ := nixcache.Classify(k); return kind == nixcache.KindNAR }
	var first, nars, others []dirKey
	for _, k := range garbage {
		switch {
		case isNarInfo(k.name):
			first = append(first, k)
		case k.dir == dirs["nar"] && isNAR("nar/"+k.name):
			nars = append(nars, k)
		default:
			others = append(others, k)
		}
	}
	var tFirst time.Duration
	tUnlink, err := timed(func() error { return unlinkOrdered(first, nars, others, &tFirst) })
	if err != nil {
		return err
	}
	fmt.Printf("unlink %d garbage keys, narinfos before NARs: %.3f s (%d narinfos: %.3f s)\nreal prune floor (cold floor and the unlinks): %.3f s\n",
		len(garbage), tUnlink.Seconds(), len(first), tFirst.Seconds(), (cold + tUnlink).Seconds())
	return nil
}

// listTree reads every directory under dir with getdents(2) into a 1 MiB
// buffer and counts the names (no per-name allocation: the least a
// listing can cost). The directories known in advance (known, relative:
// those of the manifest's keys, as a pruner knows nar/ and log/) are read
// at once beside the top, the others when found.
func listTree(dir string, known []string) (int, error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	total := 0
	started := map[string]bool{}
	var read func(d string)
	start := func(d string) {
		mu.Lock()
		defer mu.Unlock()
		if !started[d] {
			started[d] = true
			wg.Add(1)
			go read(d)
		}
	}
	read = func(d string) {
		defer wg.Done()
		n, subdirs, err := readNames(filepath.Join(dir, d))
		for _, sub := range subdirs {
			start(filepath.Join(d, sub))
		}
		mu.Lock()
		total += n
		if err != nil && firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	start(".")
	for _, d := range known {
		start(filepath.Clean(d))
	}
	wg.Wait()
	return total, firstErr
}

// readNames counts the names in directory d and returns its subdirectories.
func readNames(d string) (int, []string, error) {
	fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 1<<20)
	n := 0
	var subdirs []string
	for {
		got, err := unix.Getdents(fd, buf)
		if err != nil {
			return n, subdirs, fmt.Errorf("floor: getdents %s: %w", d, err)
		}
		if got <= 0 {
			return n, subdirs, nil
		}
		for b := buf[:got]; len(b) > 0; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			typ := b[18]
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if string(name) != "." && string(name) != ".." {
				n++
				if typ == unix.DT_DIR {
					subdirs = append(subdirs, string(name))
				}
			}
			b = b[reclen:]
		}
	}
}

func statAll(keys []dirKey, jobs int) error {
	return eachKey(keys, jobs, func(k dirKey, _ []byte) error {
		var st unix.Stat_t
		if err := unix.Fstatat(k.dir, k.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("floor: stat %s: %w", k.name, err)
		}
		return nil
	})
}

// eachKey calls fn for every key on jobs threads, each with its own 64 KiB
// buffer and its own share of the keys; it stops a thread at its first
// error and returns the first thread's.
func eachKey(keys []dirKey, jobs int, fn func(k dirKey, buf []byte) error) error {
	var wg sync.WaitGroup
	errs := make([]error, max(1, jobs))
	per := (len(keys) + len(errs) - 1) / len(errs)
	for t := range errs {
		part := keys[min(t*per, len(keys)):min((t+1)*per, len(keys))]
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for _, k := range part {
				if err := fn(k, buf); err != nil {
					errs[t] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// readAll reads every key as a pruner reads a narinfo: open without
// following a link, fstat (its size and age), read, close; jobs threads.
func readAll(keys []dirKey, jobs int) error {
	return eachKey(keys, jobs, func(k dirKey, buf []byte) error {
		fd, err := unix.Openat(k.dir, k.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("floor: open %s: %w", k.name, err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("floor: fstat %s: %w", k.name, err)
		}
		if _, err := unix.Read(fd, buf); err != nil {
			return fmt.Errorf("floor: read %s: %w", k.name, err)
		}
		return nil
	})
}

// unlinkOrdered unlinks first (the narinfos), then nars, one thread per
// directory; others (neither) go beside both, after first in a directory
// that first uses. firstDone is how long first took.
func unlinkOrdered(first, nars, others []dirKey, firstDone *time.Duration) error {
	t0 := time.Now()
	byDir := func(keys []dirKey) map[int][]string {
		m := map[int][]string{}
		for _, k := range keys {
			m[k.dir] = append(m[k.dir], k.name)
		}
		return m
	}
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	unlink := func(fd int, names []string) bool {
		for _, n := range names {
			if err := unix.Unlinkat(fd, n, 0); err != nil && err != unix.ENOENT {
				fail(fmt.Errorf("floor: unlink %s: %w", n, err))
				return false
			}
		}
		return true
	}
	var wg, firstWG sync.WaitGroup
	rest, firstByDir := byDir(others), byDir(first)
	for fd, names := range firstByDir {
		firstWG.Add(1)
		wg.Go(func() {
			ok := unlink(fd, names)
			firstWG.Done()
			if ok {
				unlink(fd, rest[fd])
			}
		})
	}
	for fd, names := range rest {
		if _, ok := firstByDir[fd]; !ok {
			wg.Go(func() { unlink(fd, names) })
		}
	}
	wg.Go(func() {
		firstWG.Wait()
		*firstDone = time.Since(t0)
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			return
		}
		for fd, names := range byDir(nars) {
			unlink(fd, names)
		}
	})
	wg.Wait()
	return firstErr
}
