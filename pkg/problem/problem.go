package problem

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// ContentType is the media type of a problem body.
const ContentType = "application/problem+json"

// maxDetail bounds the detail so that a whole body stays under 1 KiB, which is what
// Knative copies into knativeerrordata on a dead-lettered event.
const maxDetail = 768

// TypePrefix begins every problem type: the rest is the class's slug.
const TypePrefix = "https://berth.dev/problems/"

// Details is the body berth answers an error with.
type Details struct {
	// Type names the class of problem, as a URI reference.
	Type string `json:"type"`
	// Title is the short, constant summary of the class.
	Title string `json:"title"`
	// Status repeats the HTTP status.
	Status int `json:"status"`
	// Detail is this occurrence's explanation. It never carries values or credentials.
	Detail string `json:"detail,omitempty"`
}

type row struct {
	class  error
	status int
	slug   string
}

// table is the one mapping from error class to status. Order matters: the first
// class an error matches wins.
var table = []row{
	{ErrInvalid, http.StatusBadRequest, "invalid-request"},
	{ErrTooLarge, http.StatusRequestEntityTooLarge, "request-too-large"},
	{ErrUnauthenticated, http.StatusUnauthorized, "unauthenticated"},
	{ErrForbidden, http.StatusForbidden, "forbidden"},
	{ErrNotFound, http.StatusNotFound, "not-found"},
	{ErrConflict, http.StatusConflict, "conflict"},
	{ErrUnprocessable, http.StatusUnprocessableEntity, "unprocessable"},
	{ErrTooManyRequests, http.StatusTooManyRequests, "too-many-requests"},
	{ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
}

// Status maps err to the HTTP status berth answers it with.
func Status(err error) int {
	if err == nil {
		return http.StatusOK
	}
	for _, r := range table {
		if errors.Is(err, r.class) {
			return r.status
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, context.DeadlineExceeded),
		apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
		apierrors.IsTooManyRequests(err), apierrors.IsServiceUnavailable(err):
		// The API server is slow or shedding load: worth a redelivery.
		return http.StatusServiceUnavailable
	case apierrors.IsConflict(err):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// For builds the problem body for err.
func For(err error) Details {
	status := Status(err)
	slug := "internal"
	for _, r := range table {
		if r.status == status {
			slug = r.slug
			break
		}
	}
	d := Details{
		Type:   TypePrefix + slug,
		Title:  http.StatusText(status),
		Status: status,
	}
	if status == http.StatusInternalServerError {
		// An unclassified error may carry anything; do not echo it to callers.
		d.Detail = "internal error; see the function's log"
	} else {
		d.Detail = truncate(err.Error(), maxDetail)
	}
	return d
}

// Write answers err as a problem body and returns the status it wrote, with
// the headers Prepare sets.
func Write(w http.ResponseWriter, err error) int {
	d := Prepare(w, err)
	WriteDetails(w, d)
	return d.Status
}

// Prepare returns err's problem and sets the headers its status calls for,
// for a caller that writes the body itself: a 401 carries WWW-Authenticate:
// Bearer, and an error with a RetryAfter() method sets Retry-After (whole
// seconds, at least 1).
func Prepare(w http.ResponseWriter, err error) Details {
	d := For(err)
	switch d.Status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="berth"`)
	case http.StatusTooManyRequests:
		var ra interface{ RetryAfter() time.Duration }
		if errors.As(err, &ra) {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(ra.RetryAfter().Seconds())))))
		}
	}
	return d
}

// WriteDetails answers with d.
func WriteDetails(w http.ResponseWriter, d Details) {
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(d.Status)
	_ = json.NewEncoder(w).Encode(d)
}

// Clip shortens input quoted into an error's detail to 64 bytes, so that
// a problem body stays small whatever a caller sent.
func Clip(s string) string { return truncate(s, 64) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
