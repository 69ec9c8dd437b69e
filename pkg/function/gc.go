package function

import (
	"runtime/debug"
	"sync"
	"time"
)

// Go collects garbage first when the heap reaches 4 MB (GOGC=100). A
// function's start passes that before its first answer: package init, its
// client configuration, the API server's TLS handshake and first answers.
// On a cold start the collection costs the waiting request its CPU (about
// 2 ms of 17 for getport on two cores). So, unless the operator set GOGC,
// a function starts at startGCPercent, and returns to Go's default once it
// has answered its first request that is not a health probe, or after
// startGCWindow, whichever is first. The heap it reaches meanwhile stays
// under 4 MB x startGCPercent/100 (16 MB), and peak RSS does not grow: the
// collector's own work is saved too (see README, "Cold start").
const (
	startGCPercent = 400
	startGCWindow  = 30 * time.Second
)

// holdGC raises the GC percent for the start, unless getenv("GOGC") is set,
// and returns what lowers it again: idempotent, safe to call from any
// goroutine, and called by itself after startGCWindow.
func holdGC(getenv func(string) string) (release func()) {
	if getenv("GOGC") != "" {
		return func() {}
	}
	prev := debug.SetGCPercent(startGCPercent)
	var once sync.Once
	release = func() { once.Do(func() { debug.SetGCPercent(prev) }) }
	time.AfterFunc(startGCWindow, release)
	return release
}
