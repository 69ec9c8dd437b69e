package release

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingSchema stands for kubectl's validator: its first validation blocks
// until released, and it counts the validations that ran meanwhile.
type countingSchema struct {
	release  chan struct{}
	first    atomic.Bool
	inFirst  atomic.Int32 // validations that started while the first ran
	finished atomic.Bool
}

func (c *countingSchema) ValidateBytes([]byte) error {
	if c.first.CompareAndSwap(false, true) {
		<-c.release
		c.finished.Store(true)
		return nil
	}
	if !c.finished.Load() {
		c.inFirst.Add(1)
	}
	return nil
}

// While the first validation of a kind runs, the others of that kind wait for
// it; those of another kind do not.
func TestFirstValidationOfAKindInTurn(t *testing.T) {
	inner := &countingSchema{release: make(chan struct{})}
	f := &firstInTurn{Schema: inner}
	deploy := []byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"}}`)
	var wg sync.WaitGroup
	wg.Go(func() { _ = f.ValidateBytes(deploy) })
	for !inner.first.Load() {
		time.Sleep(time.Millisecond)
	}
	for range 20 {
		wg.Go(func() { _ = f.ValidateBytes(deploy) })
	}
	// Another kind is not held up by the Deployment's first validation.
	if err := f.ValidateBytes([]byte(`{"apiVersion":"v1","kind":"Service"}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the Deployments reach the validator, if they may
	if n := inner.inFirst.Load(); n != 1 {
		t.Errorf("%d validations ran during the first Deployment's; want 1 (the Service's)", n)
	}
	close(inner.release)
	wg.Wait()
	// Not JSON: straight to the validator, which reports it.
	if err := f.ValidateBytes([]byte("{")); err != nil {
		t.Fatal(err)
	}
}
