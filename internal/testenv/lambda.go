package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"testing"
	"time"
)

// KissLambdaBinary builds ./cmd/kiss-lambda as the Lambda runtime runs it
// (-tags lambda.norpc, the provided.al2023 way) for this machine.
func KissLambdaBinary(t testing.TB) string {
	t.Helper()
	return BuildBinary(t, "./cmd/kiss-lambda", "bootstrap", "lambda.norpc")
}

// LambdaEmulator is the AWS Lambda Runtime Interface Emulator running one
// function's bootstrap on 127.0.0.1, as the Lambda service would: the
// Runtime API on one port, invocations on another.
type LambdaEmulator struct {
	// URL is where invocations are POSTed.
	URL  string
	Proc *Process
}

// FindLambdaRIE looks for aws-lambda-rie in $KISS_LAMBDA_RIE, PATH and the
// Go bin directories.
func FindLambdaRIE() (string, error) { return findGoTool("aws-lambda-rie", "KISS_LAMBDA_RIE") }

// LambdaRIE starts the emulator with bootstrap as the function, its
// environment env (the function's variables and credentials) and a
// timeout in seconds. Without the emulator the test is skipped, saying so,
// or fails when CI or KISS_REQUIRE_LAMBDA_RIE is set.
func LambdaRIE(t testing.TB, bootstrap string, env []string, timeout int) *LambdaEmulator {
	t.Helper()
	bin, err := FindLambdaRIE()
	if err != nil {
		requireComponent(t, "the Lambda Runtime Interface Emulator (aws-lambda-rie)", err, "KISS_REQUIRE_LAMBDA_RIE")
	}
	invoke := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	api := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	cmd := exec.Command(bin, "--runtime-interface-emulator-address", invoke, "--runtime-api-address", api, bootstrap)
	cmd.Dir = t.TempDir()
	cmd.Env = append(cleanEnv(), env...)
	// HOME too: nothing of the developer's ~/.aws reaches the function.
	cmd.Env = append(cmd.Env, "HOME="+cmd.Dir, fmt.Sprintf("AWS_LAMBDA_FUNCTION_TIMEOUT=%d", timeout), "AWS_LAMBDA_FUNCTION_NAME=kiss-prune")
	e := &LambdaEmulator{URL: "http://" + invoke + "/2015-03-31/functions/function/invocations"}
	e.Proc = StartProcess(t, "aws-lambda-rie", cmd)
	if err := WaitTCP(invoke, 15*time.Second); err != nil {
		t.Fatalf("testenv: aws-lambda-rie: %v", err)
	}
	return e
}

// Invoke sends one event (JSON) and returns the function's response body
// and whether the invocation failed (the runtime reported an error: the
// body is then {"errorMessage":…,"errorType":…}).
func (e *LambdaEmulator) Invoke(ctx context.Context, event []byte) (body []byte, failed bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(event))
	if err != nil {
		return nil, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("invoke: %w", err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		return nil, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, true, fmt.Errorf("invoke: HTTP %d: %s", resp.StatusCode, body)
	}
	// The emulator answers 200 for a function error too (the Lambda
	// service adds X-Amz-Function-Error; the emulator does not): the body
	// is then the runtime's error object.
	var fe struct {
		ErrorType string `json:"errorType"`
	}
	failed = json.Unmarshal(body, &fe) == nil && fe.ErrorType != ""
	return body, failed, nil
}
