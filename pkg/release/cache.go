package release

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// byteCache is an expiring LRU bounded by the bytes its entries weigh as well
// as by their count: a few large entries cannot take an instance's memory.
type byteCache[V any] struct {
	mu    sync.Mutex
	lru   *expirable.LRU[string, weighed[V]]
	total atomic.Int64
	max   int64
}

type weighed[V any] struct {
	v V
	n int64
}

func newByteCache[V any](entries int, maxBytes int64, ttl time.Duration) *byteCache[V] {
	c := &byteCache[V]{max: maxBytes}
	// Expiry evicts from a goroutine of the LRU's own, hence the atomic total.
	c.lru = expirable.NewLRU[string, weighed[V]](entries, func(_ string, w weighed[V]) { c.total.Add(-w.n) }, ttl)
	return c
}

func (c *byteCache[V]) Get(k string) (V, bool) {
	w, ok := c.lru.Get(k)
	return w.v, ok
}

// Add caches v, weighing n bytes, and evicts the least recently used entries
// until the cache weighs at most its bound. An entry heavier than the bound
// is not cached.
func (c *byteCache[V]) Add(k string, v V, n int64) {
	if n > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.lru.Peek(k); ok {
		c.lru.Remove(k) // the eviction callback takes its weight off
		_ = old
	}
	c.lru.Add(k, weighed[V]{v: v, n: n})
	c.total.Add(n)
	for c.total.Load() > c.max {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
}

// Bytes is what the cache's entries weigh.
func (c *byteCache[V]) Bytes() int64 { return c.total.Load() }
