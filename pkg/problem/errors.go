// Package problem classifies berth's errors and writes them as small JSON problem
// bodies (RFC 9457): the one table that maps an error to an HTTP status.
//
// Domain packages declare their sentinels with New, naming the class they belong to:
//
//	var ErrFull = problem.New(problem.ErrUnprocessable, "port range is full")
//
// and the edge calls Status or Write. Knative Eventing retries 5xx, 404, 408, 409 and
// 429 and dead-letters the other 4xx, so the class of an error is a contract.
package problem

import "errors"

// The classes. Every error berth answers with is, through errors.Is, at most one of these.
var (
	// ErrInvalid is bad input: the request can never succeed as written (400).
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthenticated is a request without a valid bearer token for berth's
	// audience (401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden is a request that policy or RBAC refuses: a namespace or chart
	// source outside the allowlists, an operation the caller may not do, a quota (403).
	ErrForbidden = errors.New("forbidden by policy")
	// ErrNotFound is a named thing that does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrConflict is a write that still conflicted after bounded retries, or a
	// resource held by another owner (409).
	ErrConflict = errors.New("conflict")
	// ErrUnprocessable is well-formed input that cannot ever succeed in the
	// cluster's present state: a full port range, an uninstallable chart (422).
	ErrUnprocessable = errors.New("cannot be processed")
	// ErrTooLarge is a request body over the configured bound (413).
	ErrTooLarge = errors.New("request too large")
	// ErrTooManyRequests is a caller over its request rate (429). An error that
	// also has a RetryAfter() time.Duration method sets Retry-After.
	ErrTooManyRequests = errors.New("too many requests")
	// ErrUnavailable is a dependency that is missing or not answering (503).
	ErrUnavailable = errors.New("dependency unavailable")
)

// classed is a sentinel that belongs to a class: its message is its own, and
// errors.Is matches both the sentinel and its class.
type classed struct {
	class error
	msg   string
}

func (e *classed) Error() string { return e.msg }
func (e *classed) Unwrap() error { return e.class }

// New returns a sentinel error with message msg that belongs to class (one of the
// Err* classes of this package).
func New(class error, msg string) error { return &classed{class: class, msg: msg} }
