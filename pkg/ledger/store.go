// Package ledger stores port ledgers (portalloc.Ledger) in ConfigMaps, one per
// entry point, and changes them only by compare-and-swap: every write carries the
// resourceVersion it read, and a conflict re-reads and re-applies.
//
// Within one process, concurrent updates of the same ledger are committed
// together: while one write is in flight the next callers queue, and the queue is
// applied to one fresh copy and written once. Contention between processes is then
// between instances, not between requests.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/util/retry"

	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/telemetry"
)

// Labels on every ledger ConfigMap.
const (
	LabelLedger = "berth.dev/ledger"
	// AnnotationEntryPoint names the entry point a ledger belongs to.
	AnnotationEntryPoint = "berth.dev/entry-point"
)

// Op changes a ledger. It must either change it and return nil, or return an
// error and change nothing: it may be applied again to a fresher copy.
type Op func(*portalloc.Ledger) error

// Ref names a ledger: its ConfigMap, and the entry point it belongs to.
type Ref struct {
	types.NamespacedName
	// EntryPoint is recorded on the ConfigMap for people reading it.
	EntryPoint string
}

// Store reads and writes ledgers.
type Store struct {
	// MaxBatch bounds how many queued updates one write commits; 0 is no bound,
	// 1 turns group commit off.
	MaxBatch int

	client  corev1client.ConfigMapsGetter
	backoff wait.Backoff

	mu     sync.Mutex
	queues map[types.NamespacedName]*queue
}

// NewStore returns a store writing through client.
func NewStore(client corev1client.ConfigMapsGetter, backoff wait.Backoff) *Store {
	return &Store{client: client, backoff: backoff, queues: map[types.NamespacedName]*queue{}}
}

type pending struct {
	ctx  context.Context
	op   Op
	done chan error
}

type queue struct {
	mu      sync.Mutex
	waiting []*pending
	running bool
	// last is the ConfigMap as last written or read, to try a write without
	// reading first. A stale copy costs one conflict, never a blind write.
	// Only the draining goroutine touches it.
	last *corev1.ConfigMap

	// recent is the ledger as last written or read, and when, for Recent;
	// reading is a read of it in flight. Both under mu.
	recent   *portalloc.Ledger
	recentAt time.Time
	reading  *read
}

// read is a read of a ledger that concurrent Recent calls share.
type read struct {
	done chan struct{}
	l    *portalloc.Ledger
	err  error
}

// Get reads a ledger; a missing ConfigMap is an empty ledger.
func (s *Store) Get(ctx context.Context, ref Ref) (*portalloc.Ledger, error) {
	cm, err := s.client.ConfigMaps(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return portalloc.New(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ledger %s: %w", ref.NamespacedName, err)
	}
	return portalloc.Decode(cm.Data)
}

// Recent returns the ledger as this store last wrote or read it, when that was
// less than maxAge ago, and otherwise reads it (concurrent callers share one
// read). It is for choices that a compare-and-swap checks again (which entry
// point to reserve on, how many ports a namespace holds), not for answers
// that must be current: each request would otherwise read and decode the
// whole ledger, which grows with the ports held.
func (s *Store) Recent(ctx context.Context, ref Ref, maxAge time.Duration) (*portalloc.Ledger, error) {
	q := s.queue(ref)
	q.mu.Lock()
	if q.recent != nil && time.Since(q.recentAt) < maxAge {
		l := q.recent.Clone()
		q.mu.Unlock()
		return l, nil
	}
	r := q.reading
	if r == nil {
		r = &read{done: make(chan struct{})}
		q.reading = r
		start := time.Now()
		go func() {
			// Not the caller's context: the callers sharing it may outlive it.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			r.l, r.err = s.Get(rctx, ref)
			q.mu.Lock()
			q.reading = nil
			if r.err == nil && start.After(q.recentAt) {
				q.recent, q.recentAt = r.l, start
			}
			q.mu.Unlock()
			close(r.done)
		}()
	}
	q.mu.Unlock()
	select {
	case <-r.done:
		if r.err != nil {
			return nil, r.err
		}
		return r.l.Clone(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// remember records l as the ledger as it was at t, unless a newer one is
// recorded.
func (q *queue) remember(l *portalloc.Ledger, t time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.After(q.recentAt) {
		q.recent, q.recentAt = l, t
	}
}

func (s *Store) queue(ref Ref) *queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[ref.NamespacedName]
	if !ok {
		q = &queue{}
		s.queues[ref.NamespacedName] = q
	}
	return q
}

// Update applies op to the ledger and writes it if it changed. It returns op's
// own error, or the error of the write.
func (s *Store) Update(ctx context.Context, ref Ref, op Op) error {
	q := s.queue(ref)

	p := &pending{ctx: ctx, op: op, done: make(chan error, 1)}
	q.mu.Lock()
	q.waiting = append(q.waiting, p)
	if !q.running {
		q.running = true
		go s.drain(ref, q)
	}
	q.mu.Unlock()
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drain commits the queue batch by batch until it is empty.
func (s *Store) drain(ref Ref, q *queue) {
	for {
		q.mu.Lock()
		batch := q.waiting
		if s.MaxBatch > 0 && len(batch) > s.MaxBatch {
			batch, q.waiting = batch[:s.MaxBatch:s.MaxBatch], batch[s.MaxBatch:]
		} else {
			q.waiting = nil
		}
		if len(batch) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		live := batch[:0]
		for _, p := range batch {
			if err := p.ctx.Err(); err != nil {
				p.done <- err
				continue
			}
			live = append(live, p)
		}
		if len(live) > 0 {
			s.commit(ref, q, live)
		}
	}
}

// commit applies every op of batch to one copy of the ledger and writes it once,
// re-reading and re-applying on conflict.
func (s *Store) commit(ref Ref, q *queue, batch []*pending) {
	results := make([]error, len(batch))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx, span := startCommit(ctx, ref, batch)
	attempts := 0
	err := retry.OnError(s.backoff, retryable, func() error {
		attempts++
		cm, cached, at := q.last, true, time.Now()
		if cm == nil {
			cached = false
			var err error
			if cm, err = s.read(ctx, ref); err != nil {
				return err
			}
		}
		l, err := portalloc.Decode(cm.Data)
		if err != nil {
			return err
		}
		for i, p := range batch {
			results[i] = p.op(l)
		}
		data := l.Encode()
		if equality.Semantic.DeepEqual(data, cm.Data) || (len(data) == 0 && len(cm.Data) == 0) {
			if cached {
				// Nothing to write, and nothing proves the cached copy fresh:
				// read it and decide again.
				q.last = nil
				return errStaleCache
			}
			q.remember(l, at)
			return nil
		}
		next := cm.DeepCopy()
		next.Data = data
		written, err := s.write(ctx, next)
		if err != nil {
			if kube.LostRace(err) && telemetry.Metering() {
				conflicts().Add(ctx, 1, metric.WithAttributes(telemetry.AttrEntryPoint.String(ref.EntryPoint)))
			}
			q.last = nil
			return err
		}
		q.last = written
		q.remember(l, at)
		return nil
	})
	endCommit(ctx, span, ref, len(batch), attempts, err)
	if err != nil {
		switch {
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
			err = fmt.Errorf("%w: %s after %d attempts", ErrContended, ref.NamespacedName, attempts)
		case apierrors.IsInvalid(err) || apierrors.IsRequestEntityTooLargeError(err):
			err = fmt.Errorf("%w: %s: %v", ErrTooBig, ref.NamespacedName, err)
		default:
			err = fmt.Errorf("write ledger %s: %w", ref.NamespacedName, err)
		}
		for _, p := range batch {
			p.done <- err
		}
		return
	}
	for i, p := range batch {
		p.done <- results[i]
	}
}

var errStaleCache = errors.New("cached ledger may be stale")

func retryable(err error) bool {
	return err == errStaleCache || kube.LostRace(err)
}

// read returns the ledger's ConfigMap, or a new unsaved one when it is missing.
func (s *Store) read(ctx context.Context, ref Ref) (*corev1.ConfigMap, error) {
	cm, err := s.client.ConfigMaps(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: ref.Name, Namespace: ref.Namespace,
			Labels:      map[string]string{kube.LabelManagedBy: kube.ManagedBy, LabelLedger: "true"},
			Annotations: map[string]string{AnnotationEntryPoint: ref.EntryPoint},
		}}, nil
	}
	return cm, err
}

// write creates a new ledger or updates an existing one with the
// resourceVersion it was read at.
func (s *Store) write(ctx context.Context, cm *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	if cm.ResourceVersion == "" {
		return s.client.ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	}
	return s.client.ConfigMaps(cm.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
}
