// Package reservation reserves ports on shared-IP entry points: it chooses the
// entry point, learns which ports it already uses, and records the reservation in
// that entry point's ledger by compare-and-swap. It is what the getport function
// serves, and what setingress binds through.
package reservation

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
)

// EntryPoints lists entry points; consistent asks for the latest state rather
// than a cached one.
type EntryPoints interface {
	List(ctx context.Context, consistent bool) ([]entrypoint.EntryPoint, error)
}

// Ledgers reads and changes ledgers.
type Ledgers interface {
	Get(ctx context.Context, ref ledger.Ref) (*portalloc.Ledger, error)
	// Recent may answer a copy up to maxAge old.
	Recent(ctx context.Context, ref ledger.Ref, maxAge time.Duration) (*portalloc.Ledger, error)
	Update(ctx context.Context, ref ledger.Ref, op ledger.Op) error
}

// countMaxAge is how old a ledger may be when read to count what a namespace
// holds elsewhere: that count is a bound read, not locked, either way.
const countMaxAge = time.Second

// Services reports whether a Service (namespace/name) exists, for leak repair.
type Services interface {
	Exists(ctx context.Context, namespacedName string) (bool, error)
}

// Service reserves, lists, binds and releases ports.
type Service struct {
	EntryPoints EntryPoints
	Ledgers     Ledgers
	Services    Services
	Range       portalloc.Range
	// TTL is how long a reservation that is never bound lives.
	TTL time.Duration
	// MaxPerNamespace bounds the ports the owners of one namespace hold, over
	// all entry points; 0 is no bound. Owners without a namespace are not counted.
	MaxPerNamespace int
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	// seen are the entry points this service has written ledgers of, by id:
	// what the capacity metrics report on.
	seen sync.Map
}

// Request asks for a port.
type Request struct {
	// Owner is the idempotency key: the same owner gets the same port.
	Owner    string
	Protocol portalloc.Protocol
	// LBIP, when set, picks the entry point with that address.
	LBIP string
	// EntryPoint, when set, picks the entry point with that id.
	EntryPoint string
}

// Reservation is a port held on an entry point.
type Reservation struct {
	EntryPoint string             `json:"entryPoint"`
	IP         string             `json:"ip"`
	Port       int                `json:"port"`
	Protocol   portalloc.Protocol `json:"protocol"`
	Owner      string             `json:"owner"`
	State      portalloc.State    `json:"state"`
	Service    string             `json:"service,omitempty"`
	// Backend is the entry point's routing backend.
	Backend string `json:"-"`
	// ExpiresAt is when a reservation that is not bound lapses.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// Created is set by Reserve when the owner held no port before (rather
	// than being given back the one it holds).
	Created bool `json:"-"`
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func ref(ep entrypoint.EntryPoint) ledger.Ref {
	return ledger.Ref{NamespacedName: types.NamespacedName{Namespace: ep.Namespace, Name: ep.LedgerName()}, EntryPoint: ep.ID()}
}

func reservationOf(ep entrypoint.EntryPoint, k portalloc.Key, e portalloc.Entry) Reservation {
	r := Reservation{EntryPoint: ep.ID(), IP: ep.Address, Port: k.Port, Protocol: k.Protocol,
		Owner: e.Owner, State: e.State, Service: e.Service, Backend: ep.Backend}
	if e.State == portalloc.Reserved && e.Expires != 0 {
		t := time.Unix(e.Expires, 0).UTC()
		r.ExpiresAt = &t
	}
	return r
}

// Validate checks a request before anything is read.
func (r Request) Validate() error {
	if err := portalloc.ValidateOwner(r.Owner); err != nil {
		return err
	}
	if _, err := portalloc.ParseProtocol(string(r.Protocol)); err != nil {
		return err
	}
	if r.EntryPoint != "" {
		if _, _, err := entrypoint.ParseID(r.EntryPoint); err != nil {
			return err
		}
	}
	return nil
}

// Reserve gives req.Owner a port. An owner that already holds a port for the
// protocol on any candidate entry point gets that port again.
func (s *Service) Reserve(ctx context.Context, req Request) (_ Reservation, err error) {
	ctx, done := observeReserve(ctx, req)
	defer func() { done(err) }()
	if err := req.Validate(); err != nil {
		return Reservation{}, err
	}
	proto, _ := portalloc.ParseProtocol(string(req.Protocol))
	now := s.now()
	ep, holds, err := s.choose(ctx, req, proto, now)
	if err != nil {
		return Reservation{}, err
	}
	ns, others := "", 0
	if s.MaxPerNamespace > 0 && !holds {
		if ns, err = portalloc.OwnerNamespace(req.Owner); err != nil {
			ns = ""
		} else if others, err = s.heldElsewhere(ctx, ns, ep.ID(), now); err != nil {
			return Reservation{}, err
		}
	}
	var k portalloc.Key
	var e portalloc.Entry
	var created bool
	err = s.update(ctx, ep, func(l *portalloc.Ledger) error {
		_, held, ok := l.Find(req.Owner, proto)
		created = !ok || held.Expired(now)
		if ns != "" {
			if _, e, ok := l.Find(req.Owner, proto); !ok || e.Expired(now) {
				if n := others + l.Held(ns, now); n >= s.MaxPerNamespace {
					return fmt.Errorf("%w: namespace %s holds %d ports, its bound is %d", portalloc.ErrQuota, ns, n, s.MaxPerNamespace)
				}
			}
		}
		var err error
		k, e, err = l.Reserve(req.Owner, proto, s.Range, ep.InUse, now, s.TTL)
		return err
	})
	if err != nil {
		return Reservation{}, fmt.Errorf("reserve %s port on %s: %w", proto, ep.ID(), err)
	}
	r := reservationOf(ep, k, e)
	r.Created = created
	return r, nil
}

// Choose returns the entry point Reserve would reserve req on, writing
// nothing: a caller checks what it needs of the entry point before reserving,
// then reserves on it by id.
func (s *Service) Choose(ctx context.Context, req Request) (entrypoint.EntryPoint, error) {
	if err := req.Validate(); err != nil {
		return entrypoint.EntryPoint{}, err
	}
	proto, _ := portalloc.ParseProtocol(string(req.Protocol))
	ep, _, err := s.choose(ctx, req, proto, s.now())
	return ep, err
}

// choose reads each candidate's ledger: the entry point where the owner holds
// a port already (holds), else the one with the most free ports. A single
// candidate is chosen without reading its ledger (holds false): the update
// on it finds the owner's port by compare-and-swap, and a ledger is read and
// decoded whole, so that read grew with the ports held.
func (s *Service) choose(ctx context.Context, req Request, proto portalloc.Protocol, now time.Time) (entrypoint.EntryPoint, bool, error) {
	cands, err := s.candidates(ctx, req)
	if err != nil {
		return entrypoint.EntryPoint{}, false, err
	}
	if len(cands) == 1 {
		return cands[0], false, nil
	}
	best, bestFree, bestTie := -1, -1, uint64(0)
	for i, ep := range cands {
		l, err := s.Ledgers.Get(ctx, ref(ep))
		if err != nil {
			return entrypoint.EntryPoint{}, false, err
		}
		if _, e, ok := l.Find(req.Owner, proto); ok && !e.Expired(now) {
			return ep, true, nil
		}
		free := l.Free(proto, s.Range, ep.InUse, now)
		tie := tieBreak(req.Owner, ep.ID())
		if free > bestFree || free == bestFree && tie > bestTie {
			best, bestFree, bestTie = i, free, tie
		}
	}
	return cands[best], false, nil
}

// heldElsewhere counts the ports namespace ns holds on entry points other than
// the one with id skip. The count is read, not locked: owners of one namespace
// reserving at once on different entry points may pass the bound by as many.
func (s *Service) heldElsewhere(ctx context.Context, ns, skip string, now time.Time) (int, error) {
	all, err := s.EntryPoints.List(ctx, false)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ep := range all {
		if ep.ID() == skip {
			continue
		}
		l, err := s.Ledgers.Recent(ctx, ref(ep), countMaxAge)
		if err != nil {
			return 0, err
		}
		n += l.Held(ns, now)
	}
	return n, nil
}

// tieBreak orders entry points with equally many free ports pseudo-randomly per
// owner, and the same way every time for one owner, so that a redelivered request
// racing its original lands on the same entry point.
func tieBreak(owner, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(owner))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return h.Sum64()
}

// candidates are the addressed entry points a request may use. A cached list
// that has none is confirmed by a consistent one before the answer is no.
func (s *Service) candidates(ctx context.Context, req Request) ([]entrypoint.EntryPoint, error) {
	for _, consistent := range []bool{false, true} {
		all, err := s.EntryPoints.List(ctx, consistent)
		if err != nil {
			return nil, err
		}
		var out []entrypoint.EntryPoint
		for _, ep := range all {
			switch {
			case ep.Address == "":
			case req.EntryPoint != "" && ep.ID() != req.EntryPoint:
			case req.LBIP != "" && ep.Address != req.LBIP:
			default:
				out = append(out, ep)
			}
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	switch {
	case req.EntryPoint != "":
		return nil, fmt.Errorf("%w: %s", ErrUnknownEntryPoint, req.EntryPoint)
	case req.LBIP != "":
		return nil, fmt.Errorf("%w: %s", ErrUnknownAddress, problem.Clip(req.LBIP))
	}
	return nil, ErrNoEntryPoint
}

// EntryPoint finds one entry point by id, addressed or not.
func (s *Service) EntryPoint(ctx context.Context, id string) (entrypoint.EntryPoint, error) {
	if _, _, err := entrypoint.ParseID(id); err != nil {
		return entrypoint.EntryPoint{}, err
	}
	for _, consistent := range []bool{false, true} {
		all, err := s.EntryPoints.List(ctx, consistent)
		if err != nil {
			return entrypoint.EntryPoint{}, err
		}
		for _, ep := range all {
			if ep.ID() == id {
				return ep, nil
			}
		}
	}
	return entrypoint.EntryPoint{}, fmt.Errorf("%w: %s", ErrUnknownEntryPoint, id)
}

// ListEntryPoints lists every entry point once, as a cached read sees them.
func (s *Service) ListEntryPoints(ctx context.Context) ([]entrypoint.EntryPoint, error) {
	return s.EntryPoints.List(ctx, false)
}

// Release frees a port. Releasing a free port succeeds; with owner set, a port
// held by another owner is refused.
func (s *Service) Release(ctx context.Context, id string, k portalloc.Key, owner string) (bool, error) {
	if k.Port < 1 || k.Port > 65535 {
		return false, fmt.Errorf("%w: %d", portalloc.ErrNotInRange, k.Port)
	}
	if owner != "" {
		if err := portalloc.ValidateOwner(owner); err != nil {
			return false, err
		}
	}
	ep, err := s.EntryPoint(ctx, id)
	if err != nil {
		return false, err
	}
	var released bool
	err = s.update(ctx, ep, func(l *portalloc.Ledger) error {
		var err error
		released, err = l.Release(k, owner)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("release %s on %s: %w", k, id, err)
	}
	return released, nil
}

// Holder returns the owner holding port k on entry point id, or "" when the
// port is free; ErrHeld when want is set and another owner holds it. The
// answer may be a moment old: act on it with Release(holder), which refuses a
// port someone else holds by then.
func (s *Service) Holder(ctx context.Context, id string, k portalloc.Key, want string) (string, error) {
	ep, err := s.EntryPoint(ctx, id)
	if err != nil {
		return "", err
	}
	l, err := s.Ledgers.Get(ctx, ref(ep))
	if err != nil {
		return "", err
	}
	e, ok := l.Entries[k]
	switch {
	case !ok || e.Expired(s.now()):
		return "", nil
	case want != "" && e.Owner != want:
		return "", fmt.Errorf("%w: %s on %s", portalloc.ErrHeld, k, id)
	}
	return e.Owner, nil
}

// Bind records that owner's port k on entry point id now routes to service
// (namespace/name). It answers the entry as it was before, for Unbind.
func (s *Service) Bind(ctx context.Context, id string, k portalloc.Key, owner, service string) (Reservation, portalloc.Entry, error) {
	ep, err := s.EntryPoint(ctx, id)
	if err != nil {
		return Reservation{}, portalloc.Entry{}, err
	}
	now := s.now()
	var e, prev portalloc.Entry
	err = s.update(ctx, ep, func(l *portalloc.Ledger) error {
		var err error
		prev = l.Entries[k]
		e, err = l.Bind(k, owner, service, now)
		return err
	})
	if err != nil {
		return Reservation{}, portalloc.Entry{}, fmt.Errorf("bind %s on %s: %w", k, id, err)
	}
	return reservationOf(ep, k, e), prev, nil
}

// Unbind undoes a Bind whose routing could not be made: owner's port k, bound
// to service, is prev again (what Bind answered), so that a reservation a
// caller made with getport is as it was; with prev the zero Entry, the port is
// free again. A port no longer bound so is left alone.
func (s *Service) Unbind(ctx context.Context, id string, k portalloc.Key, owner, service string, prev portalloc.Entry) error {
	ep, err := s.EntryPoint(ctx, id)
	if err != nil {
		return err
	}
	err = s.update(ctx, ep, func(l *portalloc.Ledger) error {
		l.Unbind(k, owner, service, prev)
		return nil
	})
	if err != nil {
		return fmt.Errorf("unbind %s on %s: %w", k, id, err)
	}
	return nil
}

// Filter narrows List.
type Filter struct {
	EntryPoint string
	Owner      string
}

// List returns the live entries of every entry point, in entry point, protocol
// and port order.
func (s *Service) List(ctx context.Context, f Filter) ([]Reservation, error) {
	all, ledgers, err := s.snapshot(ctx, f.EntryPoint)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := []Reservation{}
	for i, ep := range all {
		l := ledgers[i]
		for _, k := range l.Keys() {
			e := l.Entries[k]
			if e.Expired(now) || f.Owner != "" && e.Owner != f.Owner {
				continue
			}
			out = append(out, reservationOf(ep, k, e))
		}
	}
	return out, nil
}

// snapshot lists the entry points (only the one whose ID is only, if set) and
// reads their ledgers at once, in their order: a caller's request waits on
// every round trip made one after another.
func (s *Service) snapshot(ctx context.Context, only string) ([]entrypoint.EntryPoint, []*portalloc.Ledger, error) {
	all, err := s.EntryPoints.List(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	if only != "" {
		all = slices.DeleteFunc(all, func(ep entrypoint.EntryPoint) bool { return ep.ID() != only })
	}
	out := make([]*portalloc.Ledger, len(all))
	g, gctx := errgroup.WithContext(ctx)
	for i, ep := range all {
		g.Go(func() (err error) {
			out[i], err = s.Ledgers.Get(gctx, ref(ep))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return all, out, nil
}

// SweepResult says what one sweep did, per entry point.
type SweepResult struct {
	Expired int `json:"expired"`
	Marked  int `json:"marked"`
	Freed   int `json:"freed"`
}

// Sweep drops lapsed reservations and frees bound ports whose Service was found
// missing on two sweeps in a row, on every entry point.
func (s *Service) Sweep(ctx context.Context) (SweepResult, error) {
	all, err := s.EntryPoints.List(ctx, true)
	if err != nil {
		return SweepResult{}, err
	}
	var total SweepResult
	for _, ep := range all {
		// Learn which Services exist before taking the ledger, so that the
		// ledger update does no I/O.
		l, err := s.Ledgers.Get(ctx, ref(ep))
		if err != nil {
			return total, err
		}
		exists := map[string]bool{}
		for _, e := range l.Entries {
			if e.State != portalloc.Bound || e.Service == "" {
				continue
			}
			if _, seen := exists[e.Service]; seen {
				continue
			}
			ok, err := s.Services.Exists(ctx, e.Service)
			if err != nil {
				return total, err
			}
			exists[e.Service] = ok
		}
		now := s.now()
		var r SweepResult
		err = s.update(ctx, ep, func(l *portalloc.Ledger) error {
			r = SweepResult{}
			r.Expired = len(l.Expire(now))
			marked, freed := l.Sweep(func(svc string) bool {
				ok, known := exists[svc]
				return ok || !known // bound since the reads above: not judged this time
			}, now)
			r.Marked, r.Freed = len(marked), len(freed)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("sweep %s: %w", ep.ID(), err)
		}
		total.Expired += r.Expired
		total.Marked += r.Marked
		total.Freed += r.Freed
	}
	return total, nil
}

// ReleaseUnbound frees owner's reservations that were never bound, on every
// entry point. Bound ports are left to whoever unexposes them, so that a port is
// never handed out again while a route to it exists.
func (s *Service) ReleaseUnbound(ctx context.Context, owner string) (int, error) {
	if err := portalloc.ValidateOwner(owner); err != nil {
		return 0, err
	}
	held, err := s.List(ctx, Filter{Owner: owner})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range held {
		if r.State != portalloc.Reserved {
			continue
		}
		ep, err := s.EntryPoint(ctx, r.EntryPoint)
		if err != nil {
			return n, err
		}
		k := portalloc.Key{Protocol: r.Protocol, Port: r.Port}
		err = s.update(ctx, ep, func(l *portalloc.Ledger) error {
			if e, ok := l.Entries[k]; !ok || e.Owner != owner || e.State != portalloc.Reserved {
				return nil // bound or freed since the read
			}
			_, err := l.Release(k, owner)
			return err
		})
		if err != nil {
			return n, fmt.Errorf("release %s on %s: %w", k, r.EntryPoint, err)
		}
		n++
	}
	return n, nil
}
