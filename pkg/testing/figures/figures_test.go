package figures

import (
	"slices"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	in := []time.Duration{5, 1, 3}
	if got := Median(in); got != 3 {
		t.Errorf("Median(5,1,3) = %v, want 3", got)
	}
	if !slices.Equal(in, []time.Duration{5, 1, 3}) {
		t.Errorf("Median changed its input: %v", in)
	}
	if got := Median([]int64{4, 1, 3, 2}); got != 3 {
		t.Errorf("Median(4,1,3,2) = %v, want the upper middle 3", got)
	}
	if got := MS(1500 * time.Microsecond); got != 1.5 {
		t.Errorf("MS(1.5ms) = %v", got)
	}
}
