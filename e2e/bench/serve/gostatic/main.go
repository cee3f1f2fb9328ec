// Command gostatic is the benchmark's reference for the Go HTTP floor of
// kiss serve: the same HTTP server (fasthttp), a handler that reads the file
// the path names and sends it, nothing else (no auth, no validation, no
// log, no metrics). kiss serve cannot be faster than this; the gap between
// it and nginx is the Go runtime's and the HTTP server's, not kiss's.
//
// With -s3 it is the floor over S3 instead: each request is one GetObject
// through the AWS SDK, its body sent on (credentials and region from the
// environment).
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/valyala/fasthttp"
)

func main() {
	dir := flag.String("dir", ".", "directory to serve")
	endpoint := flag.String("s3", "", "S3 endpoint to serve from instead of -dir")
	bucket := flag.String("bucket", "", "S3 bucket (with -s3)")
	listen := flag.String("listen", "127.0.0.1:0", "address")
	flag.Parse()
	h := func(rc *fasthttp.RequestCtx) {
		b, err := os.ReadFile(filepath.Join(*dir, filepath.Clean("/"+string(rc.Path()))))
		if err != nil {
			rc.SetStatusCode(fasthttp.StatusNotFound)
			return
		}
		rc.SetBody(b)
	}
	if *endpoint != "" {
		cl := s3.New(s3.Options{
			Region:                     os.Getenv("AWS_REGION"),
			BaseEndpoint:               aws.String(*endpoint),
			UsePathStyle:               true,
			Credentials:                aws.CredentialsProviderFunc(envCredentials),
			RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
			ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		})
		h = func(rc *fasthttp.RequestCtx) {
			out, err := cl.GetObject(context.Background(), &s3.GetObjectInput{Bucket: bucket, Key: aws.String(string(rc.Path()[1:]))})
			if err != nil {
				rc.SetStatusCode(fasthttp.StatusNotFound)
				return
			}
			rc.SetBodyStream(out.Body, int(aws.ToInt64(out.ContentLength)))
		}
	}
	log.Fatal(fasthttp.ListenAndServe(*listen, h))
}

func envCredentials(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: os.Getenv("AWS_ACCESS_KEY_ID"), SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY")}, nil
}
