package storage

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// Sentinels. Drivers wrap them (with the operation and key) so callers use errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrPreconditionFailed: a conditional write or delete lost (HTTP 412):
	// the key exists (IfNotExist) or its ETag changed (IfMatch).
	ErrPreconditionFailed = errors.New("precondition failed")
	// ErrConflict: the store refused a conditional request because another one
	// on the same key was in flight (S3 409 ConditionalRequestConflict).
	// Transient: back off and retry.
	ErrConflict = errors.New("conflicting concurrent request")
	// ErrInvalidKey: the key is not one kiss will store (traversal, empty
	// segment, control character, ...). Permanent.
	ErrInvalidKey = errors.New("invalid key")
	// ErrNotSupported: the driver cannot do this operation (see Capabilities).
	ErrNotSupported = errors.New("not supported by this store")
	// ErrInvalidURL: Open cannot make sense of the store URL.
	ErrInvalidURL = errors.New("invalid store URL")
	// ErrNoStore: the store itself does not exist (a file:// directory
	// that is not there). Open creates it only when asked (CreateDir).
	ErrNoStore = errors.New("store does not exist")
	// ErrAccessDenied: the store refused this operation to the credentials
	// (S3 403). Never a "not found": on S3 a missing key also answers 403
	// when the caller may not list the bucket, so a denied read says nothing
	// about whether the key exists. Permanent.
	ErrAccessDenied = errors.New("access denied")
)

// Error carries the operation and key of a failed storage call.
type Error struct {
	Op  string // "get", "put", "delete", "list", ...
	Key string
	Err error
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("storage %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("storage %s %q: %v", e.Op, e.Key, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// wrap attaches op and key to err (nil stays nil).
func wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	return &Error{Op: op, Key: key, Err: err}
}

// IsTransient reports whether retrying the same call may succeed: conflicts,
// timeouts and network errors. Not found, precondition failures, invalid keys
// and a cancelled context are permanent.
func IsTransient(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrConflict):
		return true
	case errors.Is(err, context.Canceled),
		errors.Is(err, ErrNotFound),
		errors.Is(err, ErrPreconditionFailed),
		errors.Is(err, ErrInvalidKey),
		errors.Is(err, ErrNotSupported),
		errors.Is(err, ErrAccessDenied):
		return false
	case errors.Is(err, context.DeadlineExceeded):
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var te interface{ Transient() bool }
	if errors.As(err, &te) {
		return te.Transient()
	}
	return false
}
