// Package figures holds the small arithmetic berth's benchmarks print their
// figures with.
package figures

import (
	"cmp"
	"slices"
	"time"
)

// MS is d in milliseconds, to the microsecond.
func MS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Median is the middle of v (the upper one of an even count); v is not changed.
func Median[T cmp.Ordered](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
