package expose

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/berth-dev/berth/pkg/keyed"
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
	unlock, err := objectLocks.Lock(ctx, key)
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

// objectLocks are the per-object turns of casUpdate's writers.
var objectLocks keyed.Locks
