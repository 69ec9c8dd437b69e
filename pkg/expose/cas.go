package expose

import (
	"context"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/berth-dev/berth/pkg/kube"
)

// casUpdate reads an object, lets change alter it, and writes it with the
// resourceVersion it was read at; on a conflict it reads again. change reports
// whether it altered the object; nothing is written when it did not. When get
// answers NotFound, create (if not nil) makes the object instead.
//
// Writers of one process to the same object (named by key) take turns, so that
// they do not spend their retries conflicting with each other; compare-and-swap
// still decides between processes.
func casUpdate[T any](ctx context.Context, key string, b wait.Backoff, get func(context.Context) (T, error), change func(T) (bool, error), put func(context.Context, T) error, create func(context.Context) error) error {
	unlock, err := objectLocks.lock(ctx, key)
	if err != nil {
		return err
	}
	defer unlock()
	return retry.OnError(b, kube.LostRace, func() error {
		obj, err := get(ctx)
		if apierrors.IsNotFound(err) && create != nil {
			return create(ctx)
		}
		if err != nil {
			return err
		}
		changed, err := change(obj)
		if err != nil || !changed {
			return err
		}
		return put(ctx, obj)
	})
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// keyedLocks are per-object locks that a waiter can give up on.
type keyedLocks struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}

type keyedLock struct {
	ch    chan struct{}
	users int
}

var objectLocks = &keyedLocks{locks: map[string]*keyedLock{}}

func (k *keyedLocks) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	l, ok := k.locks[key]
	if !ok {
		l = &keyedLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.users++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
