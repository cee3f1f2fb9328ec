package testenv

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// MinIO's root credentials in tests: they only ever guard a loopback port
// opened by the test itself.
const (
	MinIORootUser     = "kissminioroot"
	MinIORootPassword = "kissminioroot-secret"
)

// MinIOServer is a MinIO server on 127.0.0.1, started for one test: an S3
// server that evaluates AWS's IAM policy language, used to enforce kiss's
// role policies for real.
type MinIOServer struct {
	// Endpoint is the base URL, http://127.0.0.1:PORT.
	Endpoint string
	Proc     *Process
}

// Identity is a set of S3 credentials on the server.
type Identity struct {
	AccessKey, SecretKey, SessionToken string
}

// Env is the identity as the AWS environment variables every AWS SDK (and
// kiss) reads.
func (id Identity) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + id.AccessKey, "AWS_SECRET_ACCESS_KEY=" + id.SecretKey,
		"AWS_SESSION_TOKEN=" + id.SessionToken, "AWS_REGION=" + S3Region, "AWS_EC2_METADATA_DISABLED=true"}
}

// Root is the server's root identity (every policy bypassed).
func (m *MinIOServer) Root() Identity {
	return Identity{AccessKey: MinIORootUser, SecretKey: MinIORootPassword}
}

// FindMinIO looks in $KISS_MINIO, PATH and the Go bin directories.
func FindMinIO() (string, error) { return findGoTool("minio", "KISS_MINIO") }

// MinIO starts a MinIO server for this test (stopped by PID at its end).
// Without the binary the test is skipped, saying so, or fails when CI or
// KISS_REQUIRE_MINIO is set (scripts/install-deps.sh installs the pinned
// version).
func MinIO(t testing.TB) *MinIOServer {
	t.Helper()
	bin, err := FindMinIO()
	if err != nil {
		requireComponent(t, "MinIO", err, "KISS_REQUIRE_MINIO")
	}
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	console := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", console, filepath.Join(dir, "data"))
	cmd.Env = append(cleanEnv(),
		"HOME="+dir, // MinIO writes ~/.minio/certs
		"MINIO_ROOT_USER="+MinIORootUser, "MINIO_ROOT_PASSWORD="+MinIORootPassword,
		"MINIO_UPDATE=off", "MINIO_BROWSER=off", "MINIO_REGION="+S3Region)
	m := &MinIOServer{Endpoint: "http://" + addr}
	m.Proc = StartProcess(t, "minio", cmd)
	// Ready, not merely live: a live server answers S3 requests with 503
	// XMinioServerNotInitialized until its object layer is up.
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(m.Endpoint + "/minio/health/cluster")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if done, werr := m.Proc.Exited(); done {
			t.Fatalf("testenv: minio exited at start: %v", werr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: minio on %s not ready after 30s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Client is an S3 client (path-style, us-east-1) acting as id.
func (m *MinIOServer) Client(id Identity) *s3.Client {
	return s3.New(s3.Options{
		Region:                     S3Region,
		BaseEndpoint:               aws.String(m.Endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(id.AccessKey, id.SecretKey, id.SessionToken),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RetryMaxAttempts:           1,
	})
}

// StoreURL is the kiss store URL of a bucket on the server.
func (m *MinIOServer) StoreURL(bucket string) string {
	q := url.Values{}
	q.Set("endpoint", m.Endpoint)
	q.Set("region", S3Region)
	return "s3://" + bucket + "?" + q.Encode()
}

// CreateBucket creates a bucket as root.
func (m *MinIOServer) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := m.Client(m.Root()).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("testenv: create bucket %s on minio: %v", name, err)
	}
}

// AssumeRole returns temporary credentials whose permissions are exactly
// the IAM policy document policyJSON: MinIO's STS AssumeRole, called as
// root with the document as the session policy — the way a role is assumed
// on AWS, one identity per role. MinIO parses the document (its own error
// is returned for what it cannot parse) and evaluates it on every request.
func (m *MinIOServer) AssumeRole(ctx context.Context, name, policyJSON string) (Identity, error) {
	root := m.Root()
	c := sts.New(sts.Options{
		Region:       S3Region,
		BaseEndpoint: aws.String(m.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(root.AccessKey, root.SecretKey, ""),
	})
	out, err := c.AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn:         aws.String("arn:aws:iam::kiss:role/" + name), // ignored by MinIO
		RoleSessionName: aws.String(name),
		Policy:          aws.String(policyJSON),
		DurationSeconds: aws.Int32(3600),
	})
	if err != nil {
		return Identity{}, fmt.Errorf("minio: assume role %s: %w", name, err)
	}
	cr := out.Credentials
	return Identity{AccessKey: aws.ToString(cr.AccessKeyId), SecretKey: aws.ToString(cr.SecretAccessKey), SessionToken: aws.ToString(cr.SessionToken)}, nil
}

// findGoTool finds a go-installed tool: $env, PATH, then the Go bin
// directories (GOBIN, GOPATH/bin, ~/go/bin).
func findGoTool(name, env string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in $%s, PATH or %v", name, env, dirs)
}
