// Package ledger stores port ledgers in ConfigMaps and changes them only by
// compare-and-swap: every write carries the resourceVersion it read, and a
// conflict re-reads and re-applies. An entry point's ledger is split (Book):
// its ports' entries (portalloc.Ledger) in ConfigMaps of 256 ports each, and
// its owners' claims (portalloc.Claims) in ConfigMaps by namespace, so that no
// write grows with the ports the entry point holds.
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
	"maps"
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

// Doc is what a Store keeps in one ConfigMap's data.
type Doc[T any] interface {
	Encode() map[string]string
	Clone() T
}

// Op changes a document. It must either change it and return nil, or return an
// error and change nothing: it may be applied again to a fresher copy.
type Op[T any] func(T) error

// Ref names one ConfigMap of a ledger, and the entry point it belongs to.
type Ref struct {
	types.NamespacedName
	// EntryPoint is recorded on the ConfigMap for people reading it.
	EntryPoint string
	// Labels are set on the ConfigMap when it is created.
	Labels map[string]string
}

// Store reads and writes documents of type T, one per ConfigMap.
type Store[T Doc[T]] struct {
	// MaxBatch bounds how many queued updates one write commits; 0 is no bound,
	// 1 turns group commit off.
	MaxBatch int

	client  corev1client.ConfigMapsGetter
	backoff wait.Backoff
	decode  func(map[string]string) (T, error)

	mu     sync.Mutex
	queues map[types.NamespacedName]*queue[T]
}

// NewStore returns a store writing through client, reading data with decode
// (which answers an empty document for nil data).
func NewStore[T Doc[T]](client corev1client.ConfigMapsGetter, backoff wait.Backoff, decode func(map[string]string) (T, error)) *Store[T] {
	return &Store[T]{client: client, backoff: backoff, decode: decode, queues: map[types.NamespacedName]*queue[T]{}}
}

// NewBlocks returns a store of ports' entries.
func NewBlocks(client corev1client.ConfigMapsGetter, backoff wait.Backoff) *Store[*portalloc.Ledger] {
	return NewStore(client, backoff, portalloc.Decode)
}

// NewClaims returns a store of owners' claims.
func NewClaims(client corev1client.ConfigMapsGetter, backoff wait.Backoff) *Store[*portalloc.Claims] {
	return NewStore(client, backoff, portalloc.DecodeClaims)
}

type pending[T any] struct {
	ctx  context.Context
	op   Op[T]
	done chan error
}

type queue[T any] struct {
	mu      sync.Mutex
	waiting []*pending[T]
	running bool
	// last is the ConfigMap as last written or read, to try a write without
	// reading first. A stale copy costs one conflict, never a blind write.
	// Only the draining goroutine touches it.
	last *corev1.ConfigMap

	// recent is the ledger as last written or read, and when, for Recent;
	// reading is a read of it in flight. Both under mu.
	recent   T
	recentAt time.Time
	reading  *read[T]
}

// read is a read of a document that concurrent Recent calls share.
type read[T any] struct {
	done chan struct{}
	l    T
	err  error
}

// Get reads a document; a missing ConfigMap is an empty one.
func (s *Store[T]) Get(ctx context.Context, ref Ref) (T, error) {
	cm, err := s.client.ConfigMaps(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return s.decode(nil)
	}
	if err != nil {
		var zero T
		return zero, fmt.Errorf("read ledger %s: %w", ref.NamespacedName, err)
	}
	return s.decode(cm.Data)
}

// Recent returns the ledger as this store last wrote or read it, when that was
// less than maxAge ago, and otherwise reads it (concurrent callers share one
// read). It is for choices that a compare-and-swap checks again (which entry
// point to reserve on, how many ports a namespace holds), not for answers
// that must be current: each request would otherwise read and decode the
// whole ledger, which grows with the ports held.
func (s *Store[T]) Recent(ctx context.Context, ref Ref, maxAge time.Duration) (T, error) {
	l, err := s.Peek(ctx, ref, maxAge)
	if err != nil {
		return l, err
	}
	return l.Clone(), nil
}

// Peek is Recent without the copy: the caller must not change what it
// answers.
func (s *Store[T]) Peek(ctx context.Context, ref Ref, maxAge time.Duration) (T, error) {
	var zero T
	q := s.queue(ref)
	q.mu.Lock()
	if !q.recentAt.IsZero() && time.Since(q.recentAt) < maxAge {
		l := q.recent
		q.mu.Unlock()
		return l, nil
	}
	r := q.reading
	if r == nil {
		r = &read[T]{done: make(chan struct{})}
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
			return zero, r.err
		}
		return r.l, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// remember records l as the document as it was at t, unless a newer one is
// recorded.
func (q *queue[T]) remember(l T, t time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.After(q.recentAt) {
		q.recent, q.recentAt = l, t
	}
}

func (s *Store[T]) queue(ref Ref) *queue[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[ref.NamespacedName]
	if !ok {
		q = &queue[T]{}
		s.queues[ref.NamespacedName] = q
	}
	return q
}

// Update applies op to the document and writes it if it changed. It returns
// op's own error, or the error of the write.
func (s *Store[T]) Update(ctx context.Context, ref Ref, op Op[T]) error {
	q := s.queue(ref)

	p := &pending[T]{ctx: ctx, op: op, done: make(chan error, 1)}
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
func (s *Store[T]) drain(ref Ref, q *queue[T]) {
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
func (s *Store[T]) commit(ref Ref, q *queue[T], batch []*pending[T]) {
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
		l, err := s.decode(cm.Data)
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
func (s *Store[T]) read(ctx context.Context, ref Ref) (*corev1.ConfigMap, error) {
	cm, err := s.client.ConfigMaps(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &corev1.ConfigMap{ObjectMeta: ref.meta()}, nil
	}
	return cm, err
}

// meta is the metadata of ref's ConfigMap when berth creates it.
func (r Ref) meta() metav1.ObjectMeta {
	labels := map[string]string{kube.LabelManagedBy: kube.ManagedBy, LabelLedger: "true"}
	maps.Copy(labels, r.Labels)
	return metav1.ObjectMeta{Name: r.Name, Namespace: r.Namespace, Labels: labels,
		Annotations: map[string]string{AnnotationEntryPoint: r.EntryPoint}}
}

// write creates a new ledger or updates an existing one with the
// resourceVersion it was read at.
func (s *Store[T]) write(ctx context.Context, cm *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	if cm.ResourceVersion == "" {
		return s.client.ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	}
	return s.client.ConfigMaps(cm.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
}
