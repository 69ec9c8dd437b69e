// Package answer checks berth's refusals in tests: the 2018 shape on the 2018
// API's routes, a problem on berth's own.
package answer

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/seed"
)

// Refusal checks that the answer (status, Content-Type ct, body b) to
// "METHOD /path?query" refuses with status want, in the shape its route
// answers in (seed routes: the 2018 one), and under 1 KiB.
func Refusal(t testing.TB, seedRoutes []string, what string, status int, ct string, b []byte, want int) {
	t.Helper()
	_, path, _ := strings.Cut(what, " ")
	path, _, _ = strings.Cut(path, "?")
	if _, ok := seed.Path(path, seedRoutes); ok {
		if f, ok := seed.ReadFailure(ct, b); status != want || !ok || f.Code != want || len(b) >= 1024 {
			t.Errorf("%s = %d %s %s, want a %d 2018 refusal", what, status, ct, b, want)
		}
		return
	}
	var d problem.Details
	if status != want || ct != problem.ContentType || json.Unmarshal(b, &d) != nil || d.Status != want || len(b) >= 1024 {
		t.Errorf("%s = %d %s %s, want a %d problem", what, status, ct, b, want)
	}
}
