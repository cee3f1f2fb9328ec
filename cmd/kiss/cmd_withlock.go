package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/lockproto"
	"github.com/kiss-cache/kiss/publish"
	"github.com/kiss-cache/kiss/roots"
	"github.com/kiss-cache/kiss/storage"
)

const withLockUsage = `kiss with-lock MARKER STORE-PATH [flags] -- COMMAND [ARG...]

MARKER is where the root marker goes: a path or file:// URL (DIR/gcroots/NAME),
s3://BUCKET/gcroots/NAME[?region=…&endpoint=…], or https://HOST/gcroots/NAME
(a kiss gateway). The cache is MARKER minus /gcroots/NAME.

with-lock takes a shared writer lease (waiting while a prune holds the
exclusive one, at most --lock-wait), keeps it fresh while COMMAND runs, and,
only if COMMAND exits 0 and the lease is still confirmed, writes MARKER
atomically with the content "STORE-PATH\n". The lease is always released.

COMMAND gets $KISS_STORE: the file:// URL of the cache, or, for s3:// and
https:// caches (which Nix 2.8 cannot push to itself), the URL of an
ephemeral loopback endpoint served by kiss that writes to the cache:

    kiss with-lock s3://cache/gcroots/web /nix/store/…-web -- \
        sh -c 'nix copy --to "$KISS_STORE" /nix/store/…-web'

Flags (before or after MARKER and STORE-PATH, always before --):
   --lock-wait D   how long to wait while a prune holds the lock (default 10m;
                   durations: 90s, 10m, 2h, 30d, 2w)
   --lock-ttl D    lease TTL; refreshed every TTL/6 (default 30m)
   --max-lock-ttl D   the longest TTL a lease may declare (default 6h, or
                   $KISS_MAX_LOCK_TTL): --lock-ttl may not exceed it, and a
                   prune lease declaring more is judged as if it declared this
   --cert F --key F   client certificate for an mTLS gateway
   --cacert F      CA bundle for the gateway's server certificate
   --bearer TOKEN  bearer token (OIDC) for a gateway (or $KISS_BEARER)
   --keep N        keep the marker's last N values: the current one becomes
                   generation NAME~<n> before MARKER is written, and older
                   generations beyond N-1 are deleted (the pruner keeps
                   every generation; they age with the marker)

EXIT STATUS:
   COMMAND's exit status (128+N if it was killed by signal N), else
   2  usage error (arguments, flags, MARKER, STORE-PATH)
   3  the cache cannot be reached or lacks conditional writes; marker write failed
   5  a prune holds the lock and --lock-wait ran out (COMMAND did not run)
   6  the lease was lost while COMMAND ran (COMMAND was stopped; no marker)
   126  COMMAND was found but cannot be executed (no marker)
   127  COMMAND was not found (no marker)
`

func init() {
	register(&cli.Command{
		Name:            "with-lock",
		Usage:           "run COMMAND under a writer lease, then write a GC-root marker if it succeeded",
		ArgsUsage:       "MARKER STORE-PATH [flags] -- COMMAND [ARG...]",
		Description:     withLockUsage,
		SkipFlagParsing: true, // flags may follow the positional arguments; parsed below
		Action:          runWithLock,
	})
}

// withLockArgs is the parsed command line.
type withLockArgs struct {
	marker, storePath         string
	command                   []string
	wait, ttl, maxTTL         time.Duration
	keep                      int // --keep: generations of the marker
	cert, key, cacert, bearer string
	storeURL, markerKey, kind string // kind: file, s3, http
	fileRoot                  string // for kind file
}

func parseWithLockArgs(args []string) (*withLockArgs, error) {
	a := &withLockArgs{}
	fs := flag.NewFlagSet("with-lock", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a.wait, a.ttl, a.maxTTL = defaultLockWait, lockproto.DefaultTTL, lockproto.DefaultMaxTTL
	fs.Var((*durationVar)(&a.wait), "lock-wait", "")
	fs.Var((*durationVar)(&a.ttl), "lock-ttl", "")
	if v := os.Getenv("KISS_MAX_LOCK_TTL"); v != "" {
		d, err := parseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("$KISS_MAX_LOCK_TTL=%q is not a positive duration: %w", v, errDurationSyntax)
		}
		a.maxTTL = d
	}
	fs.Var((*durationVar)(&a.maxTTL), "max-lock-ttl", "")
	fs.IntVar(&a.keep, "keep", 0, "")
	fs.StringVar(&a.cert, "cert", "", "")
	fs.StringVar(&a.key, "key", "", "")
	fs.StringVar(&a.cacert, "cacert", "", "")
	fs.StringVar(&a.bearer, "bearer", os.Getenv(envBearer), "")
	before := args
	sep := -1
	for i, s := range args {
		if s == "--" {
			sep = i
			break
		}
	}
	if sep >= 0 {
		before, a.command = args[:sep], args[sep+1:]
	}
	var pos []string
	rest := before
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		rest = fs.Args()
		if len(rest) > 0 {
			pos, rest = append(pos, rest[0]), rest[1:]
		}
	}
	if sep < 0 && len(pos) > 2 {
		a.command, pos = pos[2:], pos[:2]
	}
	if len(pos) != 2 {
		return nil, fmt.Errorf("want MARKER STORE-PATH -- COMMAND, got %d arguments before the command", len(pos))
	}
	if len(a.command) == 0 {
		return nil, errors.New("no COMMAND given (put it after --)")
	}
	if a.wait < 0 || a.ttl < 0 || a.maxTTL < 0 {
		return nil, errors.New("--lock-wait, --lock-ttl and --max-lock-ttl must not be negative")
	}
	if a.ttl > a.maxTTL && a.maxTTL > 0 {
		return nil, fmt.Errorf("--lock-ttl %v exceeds --max-lock-ttl %v (a lease may not declare more; raise the bound on every host, or use a shorter TTL)", a.ttl, a.maxTTL)
	}
	if a.keep < 0 {
		return nil, fmt.Errorf("--keep %d: want 0 (no history) or a number of values to keep", a.keep)
	}
	if (a.cert == "") != (a.key == "") {
		return nil, errors.New("--cert and --key go together")
	}
	a.marker, a.storePath = pos[0], pos[1]
	if err := a.splitMarker(); err != nil {
		return nil, err
	}
	if a.kind != "http" && (a.cert != "" || a.cacert != "" || (a.bearer != "" && os.Getenv(envBearer) == "")) {
		return nil, errors.New("--cert, --key, --cacert and --bearer are for https:// gateways only")
	}
	return a, nil
}

// splitMarker derives the cache URL and the marker key from MARKER: the
// cache is everything before the last "/gcroots/".
func (a *withLockArgs) splitMarker() error {
	m := a.marker
	bad := func(why string) error { return fmt.Errorf("MARKER %q: %s", m, why) }
	cut := func(p string) (root, name string, err error) {
		i := strings.LastIndex(p, "/gcroots/")
		if i < 0 {
			return "", "", bad("must be …/gcroots/NAME")
		}
		root, name = p[:i], p[i+len("/gcroots/"):]
		if _, err := roots.WritableKey(name); err != nil {
			return "", "", bad(err.Error())
		}
		return root, name, nil
	}
	if !strings.Contains(m, "://") {
		abs, err := filepath.Abs(m)
		if err != nil {
			return bad(err.Error())
		}
		root, name, err := cut(abs)
		if err != nil {
			return err
		}
		if root == "" {
			root = "/"
		}
		a.kind, a.fileRoot, a.storeURL, a.markerKey = "file", root, root, "gcroots/"+name
		return nil
	}
	u, err := url.Parse(m)
	if err != nil {
		return bad(err.Error())
	}
	root, name, err := cut(u.Path)
	if err != nil {
		return err
	}
	a.markerKey = "gcroots/" + name
	switch u.Scheme {
	case "file":
		if root == "" {
			root = "/"
		}
		root = filepath.Clean(root) // file:///srv/./cache/gcroots/x names /srv/cache
		a.kind, a.fileRoot = "file", root
		a.storeURL = (&url.URL{Scheme: "file", Path: root}).String()
	case "s3":
		if root != "" {
			return bad("an s3:// cache is a whole bucket: want s3://BUCKET/gcroots/NAME")
		}
		a.kind = "s3"
		v := *u
		v.Path, v.RawPath = "", ""
		a.storeURL = v.String()
	case "http", "https":
		a.kind = "http"
		v := *u
		v.Path, v.RawPath, v.RawQuery = root, "", ""
		a.storeURL = v.String()
	default:
		return bad("want a path, file://, s3:// or https:// URL")
	}
	return nil
}

func runWithLock(c *cli.Context) error {
	args := c.Args().Slice()
	for _, s := range args {
		if s == "--" {
			break
		}
		if s == "-h" || s == "--help" || s == "-help" {
			fmt.Fprint(c.App.Writer, withLockUsage)
			return nil
		}
	}
	a, err := parseWithLockArgs(args)
	if err != nil {
		return usageError(fmt.Errorf("with-lock: %w", err))
	}
	ctx := c.Context
	log := slog.Default().With("marker", a.marker)

	var st storage.Store
	if a.kind == "http" {
		st, err = httpstore.Open(a.storeURL, httpstore.Options{CertFile: a.cert, KeyFile: a.key, CAFile: a.cacert, Bearer: a.bearer})
	} else {
		st, err = storage.Open(ctx, a.storeURL, storage.CreateDir()) // the first push may start the cache
	}
	if err != nil {
		return openError(err)
	}
	defer st.Close()

	res, err := publish.Root(ctx, st, publish.Options{
		Name: a.markerKey, Paths: []string{a.storePath}, Keep: a.keep,
		Lease:   lockproto.Options{TTL: a.ttl, MaxTTL: a.maxTTL, Wait: a.wait, Owner: "kiss with-lock " + a.markerKey},
		Command: func(lctx context.Context) (int, error) { return a.runCommand(ctx, lctx, st, log) },
		Logger:  log,
	})
	var failed *publish.CommandFailedError
	if errors.As(err, &failed) {
		log.Info("command failed; no marker written", "status", failed.Status)
	}
	if err != nil {
		return publishError("with-lock", err)
	}
	log.Info("marker written", "key", res.Key, "path", a.storePath)
	return nil
}

// runCommand runs COMMAND under the lease (lctx) with $KISS_STORE naming
// the cache: its file:// URL, or, for s3:// and https:// caches, an
// ephemeral loopback endpoint that writes to st for as long as it runs.
func (a *withLockArgs) runCommand(ctx, lctx context.Context, st storage.Store, log *slog.Logger) (int, error) {
	if a.kind == "file" {
		return runLocked(ctx, lctx, a.command, "file://"+a.fileRoot, log)
	}
	base, stop, err := gateway.Ephemeral(lctx, st, gateway.WithLogger(log))
	if err != nil {
		return 0, fmt.Errorf("ephemeral endpoint: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_ = stop(sctx)
		cancel()
	}()
	return runLocked(ctx, lctx, a.command, base, log)
}

// runLocked runs the command with KISS_STORE set and returns its exit
// status. When the lease is lost (lctx done) or kiss is interrupted (ctx
// done), the command's process group gets SIGTERM, then SIGKILL after 10 s.
func runLocked(ctx, lctx context.Context, argv []string, kissStore string, log *slog.Logger) (int, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "KISS_STORE="+kissStore)
	// Its own process group, so stopping it reaches everything it started
	// (a shell's children too). kiss forwards SIGINT/SIGTERM as SIGTERM.
	// If kiss itself is killed (SIGKILL, OOM), the kernel kills the command
	// (PR_SET_PDEATHSIG): on file:// it would go on writing without a lease.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started, waited := make(chan error, 1), make(chan error, 1)
	go func() {
		// The death signal fires when the thread that forked exits, not
		// the process: this goroutine keeps its thread until the command
		// has ended (the locked thread then ends with it).
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		code := ExitCannotRun
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = ExitNotFound
		}
		return 0, withExit(code, fmt.Errorf("starting %s: %w", argv[0], err))
	}
	var werr error
	select {
	case werr = <-waited:
	case <-lctx.Done():
		if ctx.Err() == nil {
			log.Error("lease lost: stopping the command", "cause", context.Cause(lctx))
		}
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case werr = <-waited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			werr = <-waited
		}
		// Whatever of the group outlived its leader gets the same end.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	if werr == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, werr
}
