package problem

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var errFull = New(ErrUnprocessable, "port range 20000-30000 is full")

func TestStatus(t *testing.T) {
	cm := schema.GroupResource{Resource: "configmaps"}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 200},
		{"invalid", fmt.Errorf("%w: protocol %q", ErrInvalid, "SCTP"), 400},
		{"wrapped sentinel", fmt.Errorf("reserve TCP port: %w", errFull), 422},
		{"not found", New(ErrNotFound, "no entry point"), 404},
		{"forbidden", New(ErrForbidden, "namespace not allowed"), 403},
		{"conflict", New(ErrConflict, "held by another owner"), 409},
		{"unavailable", New(ErrUnavailable, "no entry point"), 503},
		{"too large", &http.MaxBytesError{Limit: 10}, 413},
		{"deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), 503},
		{"api conflict", apierrors.NewConflict(cm, "ledger", errors.New("stale")), 409},
		{"api throttled", apierrors.NewTooManyRequests("slow down", 1), 503},
		{"api unavailable", apierrors.NewServiceUnavailable("etcd"), 503},
		{"api forbidden is ours to fix", apierrors.NewForbidden(cm, "ledger", errors.New("rbac")), 500},
		{"unclassified", errors.New("boom"), 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Status(tc.err); got != tc.want {
				t.Errorf("Status(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestSentinelKeepsItsMessage(t *testing.T) {
	if got, want := errFull.Error(), "port range 20000-30000 is full"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(fmt.Errorf("x: %w", errFull), errFull) {
		t.Error("a wrapped sentinel is no longer itself")
	}
}

func TestWrite(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantDetail string
	}{
		{"detail kept", fmt.Errorf("reserve: %w", errFull), "reserve: port range 20000-30000 is full"},
		{"internal hidden", errors.New("secret=hunter2"), "internal error; see the function's log"},
		{"long detail cut", fmt.Errorf("%w: %s", ErrInvalid, strings.Repeat("é", 2000)), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Write(rec, tc.err)
			if ct := rec.Header().Get("Content-Type"); ct != ContentType {
				t.Errorf("Content-Type = %q, want %q", ct, ContentType)
			}
			if rec.Body.Len() >= 1024 {
				t.Errorf("body is %d bytes, want under 1 KiB", rec.Body.Len())
			}
			if tc.wantDetail != "" && !strings.Contains(rec.Body.String(), tc.wantDetail) {
				t.Errorf("body = %s, want detail %q", rec.Body, tc.wantDetail)
			}
			if strings.Contains(rec.Body.String(), "hunter2") {
				t.Errorf("body = %s leaks an internal error", rec.Body)
			}
		})
	}
}
