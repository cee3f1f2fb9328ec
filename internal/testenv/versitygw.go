package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kiss-cache/kiss/storage"
)

// Credentials of the test S3 server. Fixed: they only ever guard a loopback
// port opened by this process.
const (
	S3AccessKey = "kisstestaccess"
	S3SecretKey = "kisstestsecret1234"
	S3Region    = "us-east-1"
)

// S3Server is a running versitygw (posix backend) on 127.0.0.1.
type S3Server struct {
	// Endpoint is the base URL, http://127.0.0.1:PORT.
	Endpoint string
	// Dir is the posix backend root: bucket B's object K is the plain file Dir/B/K.
	Dir string
	PID int

	proc   *os.Process
	exited chan struct{}
	root   string
	refs   int
}

// S3Bucket is one fresh bucket on the shared server.
type S3Bucket struct {
	Server *S3Server
	Name   string
	// URL is the kiss store URL for the bucket (s3://NAME?endpoint=…&region=…).
	URL string
	// Dir is where the bucket's objects live on disk (Server.Dir/Name).
	Dir string
}

var (
	s3mu     sync.Mutex
	s3shared *S3Server
)

// Versitygw returns the s3:// URL of a fresh bucket on a versitygw started
// for this test binary.
func Versitygw(t testing.TB) string {
	t.Helper()
	return VersitygwBucket(t).URL
}

// VersitygwBucket starts (or shares) the versitygw server and creates a
// unique bucket. The server is stopped, by PID, when the last test using it
// has finished; its directory is then removed. If the server cannot start,
// the test fails when CI or KISS_REQUIRE_S3 is set and is skipped (loudly)
// otherwise. It sets AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
// and AWS_EC2_METADATA_DISABLED=true for the process.
func VersitygwBucket(t testing.TB) S3Bucket {
	t.Helper()
	srv := acquireVersitygw(t)
	t.Cleanup(func() { releaseVersitygw(srv) })
	name := "kiss-" + s3Suffix(6)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := srv.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("testenv: create bucket %s on versitygw %s: %v", name, srv.Endpoint, err)
	}
	q := url.Values{}
	q.Set("endpoint", srv.Endpoint)
	q.Set("region", S3Region)
	return S3Bucket{
		Server: srv,
		Name:   name,
		URL:    "s3://" + name + "?" + q.Encode(),
		Dir:    filepath.Join(srv.Dir, name),
	}
}

// VersitygwStore opens a fresh versitygw bucket (VersitygwBucket) as a kiss
// store, closed when the test ends.
func VersitygwStore(t testing.TB) (storage.Store, S3Bucket) {
	t.Helper()
	bk := VersitygwBucket(t)
	st, err := storage.Open(context.Background(), bk.URL)
	if err != nil {
		t.Fatalf("testenv: open %s: %v", bk.URL, err)
	}
	t.Cleanup(func() { st.Close() })
	return st, bk
}

// Client returns a raw SDK client for the server (for setup and for tests
// that need to go around kiss).
func (s *S3Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:                     S3Region,
		BaseEndpoint:               aws.String(s.Endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(S3AccessKey, S3SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

func unavailable(t testing.TB, format string, a ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, a...)
	if os.Getenv("CI") != "" || os.Getenv("KISS_REQUIRE_S3") != "" {
		t.Fatalf("testenv: versitygw is required (CI or KISS_REQUIRE_S3 set) but %s", msg)
	}
	t.Skipf("!!! SKIPPING S3 TESTS: %s (install: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0; set KISS_REQUIRE_S3=1 to make this fatal) !!!", msg)
}

// FindVersitygw looks in $KISS_VERSITYGW, PATH, and the Go bin directories.
func FindVersitygw() (string, error) { return findGoTool("versitygw", "KISS_VERSITYGW") }

func acquireVersitygw(t testing.TB) *S3Server {
	t.Helper()
	SkipShort(t, "a test with a real S3 server (versitygw)")
	os.Setenv("AWS_ACCESS_KEY_ID", S3AccessKey)
	os.Setenv("AWS_SECRET_ACCESS_KEY", S3SecretKey)
	os.Setenv("AWS_REGION", S3Region)
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	s3mu.Lock()
	defer s3mu.Unlock()
	if s3shared != nil {
		s3shared.refs++
		return s3shared
	}
	bin, err := FindVersitygw()
	if err != nil {
		unavailable(t, "%v", err)
	}
	var lastErr error
	for try := 0; try < 3; try++ { // a free port can be taken between probe and bind
		srv, err := startVersitygw(bin)
		if err == nil {
			srv.refs = 1
			s3shared = srv
			return srv
		}
		lastErr = err
	}
	unavailable(t, "it did not start: %v", lastErr)
	return nil
}

func releaseVersitygw(srv *S3Server) {
	s3mu.Lock()
	defer s3mu.Unlock()
	srv.refs--
	if srv.refs > 0 {
		return
	}
	if s3shared == srv {
		s3shared = nil
	}
	srv.stop()
}

func (s *S3Server) stop() {
	if s.proc != nil {
		_ = s.proc.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			_ = s.proc.Kill()
			<-s.exited
		}
	}
	_ = os.RemoveAll(s.root)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startVersitygw(bin string) (*S3Server, error) {
	dir, err := os.MkdirTemp("", "kiss-versitygw-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logf, err := os.Create(filepath.Join(dir, ".versitygw.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logf.Close()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(bin, "--access", S3AccessKey, "--secret", S3SecretKey,
		"--region", S3Region, "--port", addr, "--quiet", "--keep-alive", "posix", data)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), "HOME="+dir)
	// If the test binary dies, the kernel stops the server too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	srv := &S3Server{Endpoint: "http://" + addr, Dir: data, PID: cmd.Process.Pid}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			os.RemoveAll(dir)
			return nil, fmt.Errorf("versitygw exited at start: %s", strings.TrimSpace(string(log)))
		default:
		}
		resp, err := hc.Get(srv.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			break // any HTTP answer (403 unsigned) means it serves
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			os.RemoveAll(dir)
			return nil, fmt.Errorf("versitygw on %s not ready after 15s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	srv.proc = cmd.Process
	srv.exited = exited
	srv.root = dir
	return srv, nil
}

// s3Suffix is a random lower-case hex string (bucket names allow nothing fancier).
func s3Suffix(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
