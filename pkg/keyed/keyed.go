// Package keyed is a set of mutexes, one per key (an object, a release), that a
// waiter can give up on, and that holds nothing for a key no one is using: a
// caller naming ever new keys does not grow it.
package keyed

import (
	"context"
	"sync"
)

// Locks is a set of locks by key. The zero value is ready to use.
type Locks struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	ch    chan struct{} // holds a token while the key is locked
	users int           // holders and waiters
}

// Lock waits for key's lock and returns its unlock, or ctx's error if ctx ends
// first (then nothing is held).
func (l *Locks) Lock(ctx context.Context, key string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*entry{}
	}
	e := l.m[key]
	if e == nil {
		e = &entry{ch: make(chan struct{}, 1)}
		l.m[key] = e
	}
	e.users++
	l.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; l.leave(key, e) }, nil
	case <-ctx.Done():
		l.leave(key, e)
		return nil, ctx.Err()
	}
}

func (l *Locks) leave(key string, e *entry) {
	l.mu.Lock()
	if e.users--; e.users == 0 {
		delete(l.m, key)
	}
	l.mu.Unlock()
}

// Len is the number of keys locked or waited for.
func (l *Locks) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
