package function

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// Go collects garbage first when the heap reaches 4 MB (GOGC=100). A
// function's start passes that before its first answer: its client
// configuration, the API server's TLS handshake and first answers. On a cold
// start the collection costs the waiting request its CPU (about 2 ms of 17
// for getport on two cores). So, unless the operator set GOGC, a function
// starts at startGCPercent, which defers that first collection to a 16 MB
// heap, and returns to Go's default at the first of: that collection, its
// first answer to a request that is not a health probe, or startGCWindow.
// Only the first collection is deferred: a start that does more (install's
// first request may run Helm for seconds) is collected at Go's default after
// it. Package initialisation runs before main, and so before the hold.
const (
	startGCPercent = 400
	startGCWindow  = 30 * time.Second
)

// holdGC raises the GC percent for the start, unless getenv("GOGC") is set,
// and returns what lowers it again: idempotent, safe to call from any
// goroutine, and called by itself at the first collection or after
// startGCWindow.
func holdGC(getenv func(string) string) (release func()) {
	if getenv("GOGC") != "" {
		return func() {}
	}
	prev := debug.SetGCPercent(startGCPercent)
	var once sync.Once
	release = func() { once.Do(func() { debug.SetGCPercent(prev) }) }
	// Unreachable at once: finalized, and so released, by the first
	// collection. Larger than the tiny allocator's 16 bytes, which may batch
	// an object with others that live on. A finalizer, not runtime.AddCleanup:
	// the first AddCleanup of a process cost a cold start 1 ms of CPU here.
	runtime.SetFinalizer(new([64]byte), func(*[64]byte) { release() })
	time.AfterFunc(startGCWindow, release)
	return release
}
