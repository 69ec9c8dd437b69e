package expose

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/berth-dev/berth/pkg/kube"
)

// object is one Kubernetes object that group commits change: how to read it,
// and how to write what a batch made of it.
type object[T any] struct {
	// key names the object; commits to one key are grouped.
	key     string
	backoff wait.Backoff
	// get reads the object.
	get func(context.Context) (T, error)
	// write writes obj at the resourceVersion it was read at (or creates or
	// deletes it, as obj says) and returns the generation written; 0 when it
	// deleted it.
	write func(ctx context.Context, obj T) (int64, error)
}

// edit is one caller's change to an object: it alters obj and reports
// whether it did, or returns an error and alters nothing, as it may be applied
// again to a fresher copy.
type edit[T any] func(obj T) (bool, error)

// groups commits concurrent edits of one object together: while a write is in
// flight the next callers queue, and the queue is applied to one fresh copy and
// written once, by compare-and-swap (a conflict reads again and applies the
// whole batch again). A thousand exposures on one ListenerSet are a few
// writes, not a thousand serial ones, and each write's validation runs once.
//
// The zero value is ready to use.
type groups[T any] struct {
	// maxBatch bounds the edits of one write; 0 is no bound.
	maxBatch int

	mu     sync.Mutex
	queues map[string]*editQueue[T]
}

type editQueue[T any] struct {
	waiting []*pendingEdit[T]
	running bool
}

type pendingEdit[T any] struct {
	ctx  context.Context
	edit edit[T]
	done chan editResult
}

type editResult struct {
	gen int64
	err error
}

// do applies e to o in the next commit and returns the generation that commit
// left the object at (what was written, or what was read when nothing changed;
// 0 when the object was deleted), or e's own error, or the write's.
func (g *groups[T]) do(ctx context.Context, o object[T], e edit[T]) (int64, error) {
	p := &pendingEdit[T]{ctx: ctx, edit: e, done: make(chan editResult, 1)}
	g.mu.Lock()
	if g.queues == nil {
		g.queues = map[string]*editQueue[T]{}
	}
	q := g.queues[o.key]
	if q == nil {
		q = &editQueue[T]{}
		g.queues[o.key] = q
	}
	q.waiting = append(q.waiting, p)
	if !q.running {
		q.running = true
		go g.drain(o, q)
	}
	g.mu.Unlock()
	select {
	case r := <-p.done:
		return r.gen, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// drain commits o's queue batch by batch until it is empty, then forgets it.
func (g *groups[T]) drain(o object[T], q *editQueue[T]) {
	for {
		g.mu.Lock()
		batch := q.waiting
		if g.maxBatch > 0 && len(batch) > g.maxBatch {
			batch, q.waiting = batch[:g.maxBatch:g.maxBatch], batch[g.maxBatch:]
		} else {
			q.waiting = nil
		}
		if len(batch) == 0 {
			q.running = false
			delete(g.queues, o.key)
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		live := batch[:0]
		for _, p := range batch {
			if err := p.ctx.Err(); err != nil {
				p.done <- editResult{err: err}
				continue
			}
			live = append(live, p)
		}
		if len(live) > 0 {
			g.commit(o, live)
		}
	}
}

// commit applies every edit of batch to one copy of o and writes it once.
// The write does not end with a caller's context: the batch is everyone's.
// An edit that failed, or changed nothing, gets its own answer whatever
// becomes of the write; a batch whose write fails (not a lost race) is
// committed again edit by edit, so that an edit the server refuses fails
// alone.
func (g *groups[T]) commit(o object[T], batch []*pendingEdit[T]) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	results := make([]editResult, len(batch))
	changed := make([]bool, len(batch))
	var gen, read int64 // the generation written (or read), and read
	readOK := false
	err := retry.OnError(o.backoff, kube.LostRace, func() error {
		obj, err := o.get(ctx)
		if readOK = err == nil; !readOK {
			return err
		}
		read = generationOf(obj)
		dirty := false
		for i, p := range batch {
			c, err := p.edit(obj)
			results[i], changed[i] = editResult{err: err}, c && err == nil
			dirty = dirty || changed[i]
		}
		if !dirty {
			gen = read
			return nil
		}
		gen, err = o.write(ctx, obj)
		return err
	})
	if err != nil && !kube.LostRace(err) && countTrue(changed) > 1 {
		for i, p := range batch {
			if changed[i] {
				g.commit(o, []*pendingEdit[T]{p})
			} else {
				p.done <- results[i]
			}
		}
		return
	}
	for i, p := range batch {
		switch {
		case err != nil && (changed[i] || !readOK):
			// Its change was not written, or nothing could be read.
			p.done <- editResult{err: err}
		case results[i].err != nil:
			p.done <- results[i]
		case err != nil:
			// It changed nothing: the object as read answers it.
			p.done <- editResult{gen: read}
		default:
			p.done <- editResult{gen: gen}
		}
	}
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// generationOf is obj's metadata.generation, for the objects group commits
// write.
func generationOf(obj any) int64 {
	if o, ok := obj.(interface{ GetGeneration() int64 }); ok {
		return o.GetGeneration()
	}
	return 0
}
