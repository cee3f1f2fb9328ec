package main

// The floor of a prune on file:// (issue 15's warm target): what any
// pruner that honours the grace period and checks its memo must do on a
// generated cache, in raw system calls and nothing else:
//
//   - list every directory (getdents(2)), the directories in parallel;
//   - stat every narinfo: a warm run checks each memo entry against its
//     narinfo, and an unreached narinfo's age decides whether it is a root;
//   - stat every deletion candidate (the garbage that is not a narinfo):
//     nothing younger than the grace period is deleted;
//   - with --unlink (on a copy), unlink the garbage, one thread per
//     directory (the unlinks of one directory serialise on its lock).
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
	candidates, err := keys("garbage.txt", func(k string) bool { return !isNarInfo(k) })
	if err != nil {
		return err
	}

	t0 := time.Now()
	var known []string
	for d := range dirs {
		known = append(known, d)
	}
	names, err := listTree(dir, known)
	if err != nil {
		return err
	}
	tList := time.Since(t0)
	t1 := time.Now()
	if err := statAll(narinfos, c.Int("jobs")); err != nil {
		return err
	}
	tNarInfos := time.Since(t1)
	t2 := time.Now()
	if err := statAll(candidates, c.Int("jobs")); err != nil {
		return err
	}
	tCand := time.Since(t2)
	fmt.Printf("list %d names: %.3f s\nstat %d narinfos: %.3f s\nstat %d candidates: %.3f s\nwarm floor (the three): %.3f s\n",
		names, tList.Seconds(), len(narinfos), tNarInfos.Seconds(), len(candidates), tCand.Seconds(), (tList + tNarInfos + tCand).Seconds())
	if !c.Bool("unlink") {
		return nil
	}
	garbage, err := keys("garbage.txt", func(string) bool { return true })
	if err != nil {
		return err
	}
	t3 := time.Now()
	if err := unlinkAll(garbage); err != nil {
		return err
	}
	fmt.Printf("unlink %d garbage keys: %.3f s\n", len(garbage), time.Since(t3).Seconds())
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
	var wg sync.WaitGroup
	errs := make([]error, max(1, jobs))
	per := (len(keys) + len(errs) - 1) / len(errs)
	for t := range errs {
		part := keys[min(t*per, len(keys)):min((t+1)*per, len(keys))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st unix.Stat_t
			for _, k := range part {
				if err := unix.Fstatat(k.dir, k.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					errs[t] = fmt.Errorf("floor: stat %s: %w", k.name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func unlinkAll(keys []dirKey) error {
	byDir := map[int][]string{}
	for _, k := range keys {
		byDir[k.dir] = append(byDir[k.dir], k.name)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for fd, names := range byDir {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, n := range names {
				if err := unix.Unlinkat(fd, n, 0); err != nil && err != unix.ENOENT {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("floor: unlink %s: %w", n, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
