// Package reservation reserves ports on shared-IP entry points: it chooses the
// entry point, learns which ports it already uses, and records the reservation in
// that entry point's ledger by compare-and-swap. It is what the getport function
// serves, and what setingress binds through.
package reservation

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
)

// EntryPoints lists entry points; consistent asks for the latest state rather
// than a cached one.
type EntryPoints interface {
	List(ctx context.Context, consistent bool) ([]entrypoint.EntryPoint, error)
	// Identify lists them less what only choosing a free port needs
	// (entrypoint.Finder.Identify).
	Identify(ctx context.Context, consistent bool) ([]entrypoint.EntryPoint, error)
}

// countMaxAge is how old a namespace's claims on another entry point may be
// when counted for its quota: that count is a bound read, not locked, either way.
const countMaxAge = time.Second

// pickMaxAge is how old a block may be when read to pick a free port. The
// compare-and-swap on the block decides; a block seen full a moment ago is
// passed over, so that a port another process freed meanwhile is handed out
// a moment later, and a reservation does not read every block before it.
const pickMaxAge = 5 * time.Second

// claimGrace is how long the sweep keeps a claim that no entry bears out, or
// a reservation's entry that no claim names: a reservation writes its entry,
// then its claim, and a release its entry, then its claim.
const claimGrace = time.Minute

// reserveTimeout bounds a reservation's writes once it has begun them.
const reserveTimeout = 30 * time.Second

// maxMoves bounds how often one reservation finds its claimed port taken and
// claims another.
const maxMoves = 16

// Services reports whether a Service (namespace/name) exists, for leak repair.
type Services interface {
	Exists(ctx context.Context, namespacedName string) (bool, error)
}

// Service reserves, lists, binds and releases ports.
type Service struct {
	EntryPoints EntryPoints
	Ledgers     *ledger.Books
	// Namespace, when set, is the entry points' namespace, where their
	// ledgers are: reads list its ledgers while they list the entry points.
	Namespace string
	Services  Services
	Range     portalloc.Range
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
	// absent are ids of entry points that have ledgers but that a
	// consistent read found missing (deleted with ports bound), or whose
	// ledgers hold no live entry: an absence. Only ids that have ledgers.
	absent sync.Map
}

// absence is when a consistent read found an entry point missing, or that
// its ledger's blocks hold no live entry (lapsed), and the state of those
// blocks then (ledger.Listing.Version).
type absence struct {
	at      time.Time
	version string
	lapsed  bool
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

func book(ep entrypoint.EntryPoint) ledger.Book {
	return ledger.BookFor(ep.Namespace, string(ep.Kind), ep.Name)
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
//
// The entry point's ledger is split (ledger.Book): the owner's claim, in the
// ConfigMap of its namespace's claims, names its port; the port's entry, in
// the ConfigMap of its block of ports, names its owner. Reserve takes a port
// in its block, then claims it: two deliveries of one request, in any
// processes, agree on one port by compare-and-swap on the claim, and the
// namespace's quota is counted in that same write.
func (s *Service) Reserve(ctx context.Context, req Request) (_ Reservation, err error) {
	ctx, done := observeReserve(ctx, req)
	defer func() { done(err) }()
	if err := req.Validate(); err != nil {
		return Reservation{}, err
	}
	proto, _ := portalloc.ParseProtocol(string(req.Protocol))
	now := s.now()
	ep, _, err := s.choose(ctx, req, proto, now)
	if err != nil {
		return Reservation{}, err
	}
	b, err := s.open(ctx, ep, false)
	if err != nil {
		return Reservation{}, err
	}
	ns, others := "", 0
	if s.MaxPerNamespace > 0 {
		if ns, err = portalloc.OwnerNamespace(req.Owner); err != nil {
			ns = ""
		} else if others, err = s.heldElsewhere(ctx, ns, ep.ID(), now); err != nil {
			return Reservation{}, err
		}
	}
	r, err := s.reserve(ctx, ep, b, req.Owner, proto, ns, others, now)
	if err != nil {
		return Reservation{}, fmt.Errorf("reserve %s port on %s: %w", proto, ep.ID(), err)
	}
	return r, nil
}

// errNotHers is an owner's claim that names a port other than the one taken.
var errNotHers = errors.New("the owner claims another port")

// reserve takes a port for owner in its block, then claims it. A port is
// picked inside the block's compare-and-swap, so that concurrent reservations
// in any processes pick different ports as they did in one ledger; the claim,
// in the ConfigMap of the owner's namespace, then settles which port an owner
// holds: a concurrent delivery of the same request that claimed first wins,
// and the port taken here is given back.
func (s *Service) reserve(ctx context.Context, ep entrypoint.EntryPoint, b ledger.Book, owner string, proto portalloc.Protocol, ns string, others int, now time.Time) (Reservation, error) {
	// A port taken is claimed or given back even when the caller has gone:
	// a port taken and never claimed is counted in no quota until the sweep.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reserveTimeout)
	defer cancel()
	cref := b.Claims(owner)
	known, err := s.Ledgers.Claims.Peek(ctx, cref, countMaxAge)
	if err != nil {
		return Reservation{}, err
	}
	cl, holds := known.Find(owner, proto)
	if ns != "" && (!holds || cl.Lapsed(now)) {
		// Refused early on what this process last saw; counted again in the
		// claim's write.
		if n := others + known.Held(ns, now); n >= s.MaxPerNamespace {
			return Reservation{}, quotaErr(ns, n, s.MaxPerNamespace)
		}
	}
	// About to take a port: an entry point new to this berth gets the old
	// ledger's fence first.
	if err := s.Ledgers.Migrate(ctx, b, true); err != nil {
		return Reservation{}, err
	}
	var k portalloc.Key
	var e portalloc.Entry
	var created, ok bool
	var bad portalloc.Claim // the owner's claim, when someone else holds its port
	if holds {
		k = portalloc.Key{Protocol: proto, Port: cl.Port}
		if e, created, ok, err = s.take(ctx, ep, b, k, owner, now); err != nil {
			return Reservation{}, err
		}
	}
	if !ok {
		if holds {
			bad = cl
		}
		if k, e, created, err = s.takeFree(ctx, ep, b, known, owner, proto, now); err != nil {
			return Reservation{}, err
		}
	}
	for range maxMoves {
		err := s.Ledgers.Claims.Update(ctx, cref, func(c *portalloc.Claims) error {
			cur, ok := c.Find(owner, proto)
			switch {
			case ok && cur.Port != k.Port && cur != bad && !cur.Lapsed(now):
				return errNotHers
			case ok && cur.Port == k.Port && cur.Expires == e.Expires:
				return nil // as it was: a redelivery writes nothing
			case ns != "" && (!ok || cur.Lapsed(now)):
				if n := others + c.Held(ns, now); n >= s.MaxPerNamespace {
					return quotaErr(ns, n, s.MaxPerNamespace)
				}
			}
			c.Put(proto, portalloc.Claim{Owner: owner, Port: k.Port, Since: now.Unix(), Expires: e.Expires})
			return nil
		})
		if err == nil {
			r := reservationOf(ep, k, e)
			r.Created = created
			return r, nil
		}
		if created {
			// Not claimed: the port taken here goes back.
			if rerr := s.untake(ctx, b, k, owner); rerr != nil {
				return Reservation{}, errors.Join(err, rerr)
			}
			created = false
		}
		if !errors.Is(err, errNotHers) {
			return Reservation{}, err
		}
		// Another delivery claimed first: follow its port if the owner holds
		// it, else drop that claim and take a port again.
		c, err := s.Ledgers.Claims.Get(ctx, cref)
		if err != nil {
			return Reservation{}, err
		}
		if cur, ok := c.Find(owner, proto); ok {
			var held bool
			if e, _, held, err = s.take(ctx, ep, b, portalloc.Key{Protocol: proto, Port: cur.Port}, owner, now); err != nil {
				return Reservation{}, err
			}
			if held {
				k = portalloc.Key{Protocol: proto, Port: cur.Port}
				continue // the claim is renewed, and settles it
			}
			if err := s.Ledgers.Claims.Update(ctx, cref, func(c *portalloc.Claims) error {
				c.Drop(owner, proto, cur.Port, cur.Expires)
				return nil
			}); err != nil {
				return Reservation{}, err
			}
		}
		if k, e, created, err = s.takeFree(ctx, ep, b, c, owner, proto, now); err != nil {
			return Reservation{}, err
		}
	}
	return Reservation{}, fmt.Errorf("%w: %s: the claims of %s kept moving, %d times", ledger.ErrContended, b.Name, owner, maxMoves)
}

func quotaErr(ns string, n, bound int) error {
	return fmt.Errorf("%w: namespace %s holds %d ports, its bound is %d", portalloc.ErrQuota, ns, n, bound)
}

// take gives owner port k in its block (ok), unless someone else holds it.
func (s *Service) take(ctx context.Context, ep entrypoint.EntryPoint, b ledger.Book, k portalloc.Key, owner string, now time.Time) (e portalloc.Entry, created, ok bool, err error) {
	err = s.Ledgers.Blocks.Update(ctx, b.Block(ledger.BlockOf(k.Port)), func(l *portalloc.Ledger) error {
		var err error
		e, created, err = l.Take(k, owner, ep.InUse, now, s.TTL)
		return err
	})
	if errors.Is(err, portalloc.ErrHeld) {
		return portalloc.Entry{}, false, false, nil
	}
	return e, created, err == nil, err
}

// untake gives back a port take or takeFree created, unless it is bound.
func (s *Service) untake(ctx context.Context, b ledger.Book, k portalloc.Key, owner string) error {
	return s.Ledgers.Blocks.Update(ctx, b.Block(ledger.BlockOf(k.Port)), func(l *portalloc.Ledger) error {
		if e, ok := l.Entries[k]; ok && e.Owner == owner && e.State == portalloc.Reserved {
			delete(l.Entries, k)
		}
		return nil
	})
}

// takeFree takes a free port for owner: the number of its port of the other
// protocol (in claims) when that is free, else the lowest free port of the
// range, picked in the block's compare-and-swap. It passes over blocks seen
// full less than pickMaxAge ago, and reads them all again before it answers
// ErrFull.
func (s *Service) takeFree(ctx context.Context, ep entrypoint.EntryPoint, b ledger.Book, claims *portalloc.Claims, owner string, proto portalloc.Protocol, now time.Time) (portalloc.Key, portalloc.Entry, bool, error) {
	if c, ok := claims.Find(owner, proto.Other()); ok && !c.Lapsed(now) && s.Range.Contains(c.Port) {
		k := portalloc.Key{Protocol: proto, Port: c.Port}
		e, created, ok, err := s.take(ctx, ep, b, k, owner, now)
		if ok || err != nil {
			return k, e, created, err
		}
	}
	for _, maxAge := range []time.Duration{pickMaxAge, 0} {
		for n := ledger.BlockOf(s.Range.Min); n <= ledger.BlockOf(s.Range.Max); n++ {
			ports := n.Ports()
			r := portalloc.Range{Min: max(ports.Min, s.Range.Min), Max: min(ports.Max, s.Range.Max)}
			seen, err := s.Ledgers.Blocks.Peek(ctx, b.Block(n), maxAge)
			if err != nil {
				return portalloc.Key{}, portalloc.Entry{}, false, err
			}
			if seen.Free(proto, r, ep.InUse, now) == 0 {
				continue
			}
			var k portalloc.Key
			var e portalloc.Entry
			var created bool
			err = s.Ledgers.Blocks.Update(ctx, b.Block(n), func(l *portalloc.Ledger) error {
				_, held, ok := l.Find(owner, proto)
				var err error
				k, e, err = l.Reserve(owner, proto, r, ep.InUse, now, s.TTL)
				created = !ok || held.Expired(now)
				return err
			})
			switch {
			case err == nil:
				return k, e, created, nil
			case !errors.Is(err, portalloc.ErrFull):
				return portalloc.Key{}, portalloc.Entry{}, false, err
			}
		}
	}
	return portalloc.Key{}, portalloc.Entry{}, false, fmt.Errorf("%w: no %s port free in %s", portalloc.ErrFull, proto, s.Range)
}

// open returns ep's ledger, moved to its split layout if it was not yet
// (Books.Migrate, fencing it where fence is set), and notes ep for the
// capacity metrics.
func (s *Service) open(ctx context.Context, ep entrypoint.EntryPoint, fence bool) (ledger.Book, error) {
	b := book(ep)
	if err := s.Ledgers.Migrate(ctx, b, fence); err != nil {
		return ledger.Book{}, err
	}
	s.seen.Store(ep.ID(), ep)
	return b, nil
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

// choose returns the entry point where the owner holds a port already
// (holds), else the one with the most free ports. A single candidate is
// chosen without reading its ledger (holds false): Reserve finds the owner's
// claim on it anyway.
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
		b, err := s.open(ctx, ep, false)
		if err != nil {
			return entrypoint.EntryPoint{}, false, err
		}
		c, err := s.Ledgers.Claims.Get(ctx, b.Claims(req.Owner))
		if err != nil {
			return entrypoint.EntryPoint{}, false, err
		}
		if cl, ok := c.Find(req.Owner, proto); ok && !cl.Lapsed(now) {
			return ep, true, nil
		}
		free, err := s.free(ctx, ep, b, proto, now)
		if err != nil {
			return entrypoint.EntryPoint{}, false, err
		}
		tie := tieBreak(req.Owner, ep.ID())
		if free > bestFree || free == bestFree && tie > bestTie {
			best, bestFree, bestTie = i, free, tie
		}
	}
	return cands[best], false, nil
}

// free counts ep's free ports for proto, from blocks up to pickMaxAge old.
func (s *Service) free(ctx context.Context, ep entrypoint.EntryPoint, b ledger.Book, proto portalloc.Protocol, now time.Time) (int, error) {
	n := 0
	for blk := ledger.BlockOf(s.Range.Min); blk <= ledger.BlockOf(s.Range.Max); blk++ {
		l, err := s.Ledgers.Blocks.Peek(ctx, b.Block(blk), pickMaxAge)
		if err != nil {
			return 0, err
		}
		ports := blk.Ports()
		n += l.Free(proto, portalloc.Range{Min: max(ports.Min, s.Range.Min), Max: min(ports.Max, s.Range.Max)}, ep.InUse, now)
	}
	return n, nil
}

// heldElsewhere counts the ports namespace ns holds on entry points other than
// the one with id skip, from its claims there. The count is read, not locked:
// owners of one namespace reserving at once on different entry points may pass
// the bound by as many.
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
		b := book(ep)
		if err := s.Ledgers.Migrate(ctx, b, false); err != nil {
			return 0, err
		}
		c, err := s.Ledgers.Claims.Peek(ctx, b.ClaimsOf(ns), countMaxAge)
		if err != nil {
			return 0, err
		}
		n += c.Held(ns, now)
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

// Release frees a port, and its owner's claim on it. Releasing a free port
// succeeds; with owner set, a port held by another owner is refused.
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
	b, err := s.open(ctx, ep, false)
	if err != nil {
		return false, err
	}
	var released bool
	var was portalloc.Entry
	err = s.Ledgers.Blocks.Update(ctx, b.Block(ledger.BlockOf(k.Port)), func(l *portalloc.Ledger) error {
		var err error
		was = l.Entries[k]
		released, err = l.Release(k, owner)
		return err
	})
	if err == nil && released {
		err = s.Ledgers.Claims.Update(ctx, b.Claims(was.Owner), func(c *portalloc.Claims) error {
			c.Drop(was.Owner, k.Protocol, k.Port, was.Expires)
			return nil
		})
	}
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
	b, err := s.open(ctx, ep, false)
	if err != nil {
		return "", err
	}
	l, err := s.Ledgers.Blocks.Get(ctx, b.Block(ledger.BlockOf(k.Port)))
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
// (namespace/name), and that owner's claim on it no longer lapses. It answers
// the entry as it was before, for Unbind.
func (s *Service) Bind(ctx context.Context, id string, k portalloc.Key, owner, service string) (Reservation, portalloc.Entry, error) {
	ep, err := s.EntryPoint(ctx, id)
	if err != nil {
		return Reservation{}, portalloc.Entry{}, err
	}
	b, err := s.open(ctx, ep, false)
	if err != nil {
		return Reservation{}, portalloc.Entry{}, err
	}
	now := s.now()
	var e, prev portalloc.Entry
	err = s.Ledgers.Blocks.Update(ctx, b.Block(ledger.BlockOf(k.Port)), func(l *portalloc.Ledger) error {
		var err error
		prev = l.Entries[k]
		e, err = l.Bind(k, owner, service, now)
		return err
	})
	if err == nil {
		err = s.claim(ctx, b, k, owner, 0, now)
	}
	if err != nil {
		return Reservation{}, portalloc.Entry{}, fmt.Errorf("bind %s on %s: %w", k, id, err)
	}
	return reservationOf(ep, k, e), prev, nil
}

// claim records owner's claim on k, lapsing at expires (Unix seconds; 0 for
// a bound port).
func (s *Service) claim(ctx context.Context, b ledger.Book, k portalloc.Key, owner string, expires int64, now time.Time) error {
	return s.Ledgers.Claims.Update(ctx, b.Claims(owner), func(c *portalloc.Claims) error {
		if cur, ok := c.Find(owner, k.Protocol); ok && cur.Port == k.Port && cur.Expires == expires {
			return nil
		}
		c.Put(k.Protocol, portalloc.Claim{Owner: owner, Port: k.Port, Since: now.Unix(), Expires: expires})
		return nil
	})
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
	b, err := s.open(ctx, ep, false)
	if err != nil {
		return err
	}
	var undone bool
	err = s.Ledgers.Blocks.Update(ctx, b.Block(ledger.BlockOf(k.Port)), func(l *portalloc.Ledger) error {
		undone = l.Unbind(k, owner, service, prev)
		return nil
	})
	switch {
	case err != nil || !undone:
	case prev == (portalloc.Entry{}) || prev.Owner != owner:
		// Free again, or held by another (a refusal's placeholder).
		err = s.Ledgers.Claims.Update(ctx, b.Claims(owner), func(c *portalloc.Claims) error {
			c.Drop(owner, k.Protocol, k.Port, 0)
			return nil
		})
	default:
		err = s.claim(ctx, b, k, owner, prev.Expires, s.now())
	}
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
	all, ledgers, err := s.snapshot(ctx, f.EntryPoint, false)
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

// absentFor is how long an entry point that has ledgers, and that a
// consistent read found missing, is taken to be gone while its ledger is not
// written: listings do not read the entry points again, consistently, for
// its sake meanwhile.
const absentFor = time.Minute

// snapshot lists the entry points (only the one whose ID is only, if set) and
// reads their ledgers' entries at once, in their order: a caller's request
// waits on every round trip made one after another. Without used, the entry
// points are identified only (Finder.Identify): their InUse does not count
// the ports of ingress-nginx's stream ConfigMaps. With Namespace set and no
// only, every ledger is listed at once, beside the entry points.
//
// Without used, the entry points are read from the API server's watch cache,
// as a reservation reads them: it is cheaper than a consistent read, and
// entry points change seldom. The ledgers are read consistently, and they
// tell which entry points the cache may have missed (one created a moment
// ago, and reserved on at once): an entry point that only names, or whose
// ledger holds a live entry, and that the cache does not show, is looked
// for again by a consistent read before the answer is given without it;
// unless that read found it missing less than absentFor ago and its ledger
// has not been written since (one deleted with ports bound).
func (s *Service) snapshot(ctx context.Context, only string, used bool) ([]entrypoint.EntryPoint, []*portalloc.Ledger, error) {
	var (
		all     []entrypoint.EntryPoint
		listing *ledger.Listing
	)
	// Without only or the ledgers' namespace, nothing tells a miss.
	cached := !used && (only != "" || s.Namespace != "")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		if used {
			all, err = s.EntryPoints.List(gctx, true)
		} else {
			all, err = s.EntryPoints.Identify(gctx, !cached)
		}
		return err
	})
	if only == "" && s.Namespace != "" {
		// Every ledger is wanted: list them all, in the same round trip.
		g.Go(func() (err error) {
			listing, err = s.Ledgers.List(gctx, s.Namespace)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	if cached && len(s.missed(all, only, listing)) > 0 {
		var err error
		if all, err = s.EntryPoints.Identify(ctx, true); err != nil {
			return nil, nil, err
		}
		if only == "" {
			// Still missing: gone, with ports bound. Bounded by the
			// ledgers there are, unlike the ids callers name.
			now := s.now()
			for _, id := range s.missed(all, "", listing) {
				s.absent.Store(id, absence{at: now, version: listing.Version(id)})
			}
		}
	}
	for _, ep := range all {
		s.absent.Delete(ep.ID()) // back (recreated), if it was gone
	}
	if only != "" {
		all = slices.DeleteFunc(all, func(ep entrypoint.EntryPoint) bool { return ep.ID() != only })
	}
	out := make([]*portalloc.Ledger, len(all))
	g, gctx = errgroup.WithContext(ctx)
	for i, ep := range all {
		g.Go(func() error {
			var err error
			out[i], err = s.Ledgers.ReadListed(gctx, listing, book(ep))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return all, out, nil
}

// missed returns the ids of the entry points that all lacks and that are
// wanted: only, if set; else those whose ledgers in listing hold a live
// entry, but for those found absent less than absentFor ago whose ledger
// has not been written since. It keeps absent to the ids listing has.
func (s *Service) missed(all []entrypoint.EntryPoint, only string, listing *ledger.Listing) []string {
	known := func(id string) bool {
		return slices.ContainsFunc(all, func(ep entrypoint.EntryPoint) bool { return ep.ID() == id })
	}
	if only != "" {
		if known(only) {
			return nil
		}
		return []string{only}
	}
	var out []string
	now := s.now()
	ids := listing.EntryPoints()
	for _, id := range ids {
		if known(id) {
			continue
		}
		v := listing.Version(id)
		if a, ok := s.absent.Load(id); ok && a.(absence).version == v && (a.(absence).lapsed || now.Sub(a.(absence).at) < absentFor) {
			continue
		}
		if l, err := listing.Entries(id); err == nil && !live(l, now) {
			// Nothing it holds would be listed, until it is written: a
			// lapsed entry does not come back.
			s.absent.Store(id, absence{at: now, version: v, lapsed: true})
			continue
		}
		out = append(out, id)
	}
	s.absent.Range(func(id, _ any) bool {
		if !slices.Contains(ids, id.(string)) {
			s.absent.Delete(id) // its ledgers are gone
		}
		return true
	})
	return out
}

// live reports whether l holds an entry that has not lapsed at now.
func live(l *portalloc.Ledger, now time.Time) bool {
	for _, e := range l.Entries {
		if !e.Expired(now) {
			return true
		}
	}
	return false
}

// SweepResult says what one sweep did, per entry point.
type SweepResult struct {
	Expired int `json:"expired"`
	Marked  int `json:"marked"`
	Freed   int `json:"freed"`
	// Claims are owners' claims dropped because no entry bore them out.
	Claims int `json:"claims"`
	// Unclaimed are reservations dropped because no claim named them.
	Unclaimed int `json:"unclaimed"`
}

// Sweep drops lapsed reservations and frees bound ports whose Service was found
// missing on two sweeps in a row, on every entry point; then it drops the
// claims no port's entry bears out, and the reservations no claim names.
func (s *Service) Sweep(ctx context.Context) (SweepResult, error) {
	all, err := s.EntryPoints.List(ctx, true)
	if err != nil {
		return SweepResult{}, err
	}
	var total SweepResult
	for _, ep := range all {
		r, err := s.sweep(ctx, ep)
		total.Expired += r.Expired
		total.Marked += r.Marked
		total.Freed += r.Freed
		total.Claims += r.Claims
		total.Unclaimed += r.Unclaimed
		if err != nil {
			return total, fmt.Errorf("sweep %s: %w", ep.ID(), err)
		}
	}
	return total, nil
}

func (s *Service) sweep(ctx context.Context, ep entrypoint.EntryPoint) (SweepResult, error) {
	var r SweepResult
	b, err := s.open(ctx, ep, false)
	if err != nil {
		return r, err
	}
	// Learn which Services exist before taking the blocks, so that their
	// updates do no I/O.
	l, err := s.Ledgers.Entries(ctx, b)
	if err != nil {
		return r, err
	}
	exists := map[string]bool{}
	blocks := map[ledger.Block]bool{}
	for k, e := range l.Entries {
		blocks[ledger.BlockOf(k.Port)] = true
		if e.State != portalloc.Bound || e.Service == "" {
			continue
		}
		if _, seen := exists[e.Service]; seen {
			continue
		}
		ok, err := s.Services.Exists(ctx, e.Service)
		if err != nil {
			return r, err
		}
		exists[e.Service] = ok
	}
	now := s.now()
	for n := range blocks {
		var one SweepResult
		err := s.Ledgers.Blocks.Update(ctx, b.Block(n), func(l *portalloc.Ledger) error {
			one = SweepResult{Expired: len(l.Expire(now))}
			marked, freed := l.Sweep(func(svc string) bool {
				ok, known := exists[svc]
				return ok || !known // bound since the reads above: not judged this time
			}, now)
			one.Marked, one.Freed = len(marked), len(freed)
			return nil
		})
		if err != nil {
			return r, err
		}
		r.Expired += one.Expired
		r.Marked += one.Marked
		r.Freed += one.Freed
	}
	// Then claims and entries that do not bear each other out, made more
	// than claimGrace ago: a reservation, or a release, between its two
	// writes is younger.
	shards, err := s.Ledgers.AllClaims(ctx, b)
	if err != nil {
		return r, err
	}
	if l, err = s.Ledgers.Entries(ctx, b); err != nil {
		return r, err
	}
	claimed := map[portalloc.Key]string{}
	for _, sh := range shards {
		for key := range sh.Claims.ByKey {
			k, cl := sh.Claims.Port(key)
			claimed[k] = cl.Owner
		}
	}
	unclaimed := map[ledger.Block]map[portalloc.Key]portalloc.Entry{}
	for k, e := range l.Entries {
		if e.State == portalloc.Reserved && claimed[k] != e.Owner && e.Since < now.Add(-claimGrace).Unix() {
			n := ledger.BlockOf(k.Port)
			if unclaimed[n] == nil {
				unclaimed[n] = map[portalloc.Key]portalloc.Entry{}
			}
			unclaimed[n][k] = e
		}
	}
	for n, entries := range unclaimed {
		var dropped int
		err := s.Ledgers.Blocks.Update(ctx, b.Block(n), func(l *portalloc.Ledger) error {
			dropped = 0
			for k, e := range entries {
				if l.Entries[k] == e {
					delete(l.Entries, k)
					dropped++
				}
			}
			return nil
		})
		if err != nil {
			return r, err
		}
		r.Unclaimed += dropped
	}
	bears := func(k portalloc.Key, owner string) (portalloc.Entry, bool) {
		e, ok := l.Entries[k]
		return e, ok && e.Owner == owner && !e.Expired(now)
	}
	for _, sh := range shards {
		var dropped int
		err := s.Ledgers.Claims.Update(ctx, sh.Ref, func(c *portalloc.Claims) error {
			dropped = c.Repair(bears, now.Add(-claimGrace))
			return nil
		})
		if err != nil {
			return r, err
		}
		r.Claims += dropped
	}
	return r, nil
}

// ReleaseUnbound frees owner's reservations that were never bound, on every
// entry point. Bound ports are left to whoever unexposes them, so that a port is
// never handed out again while a route to it exists.
func (s *Service) ReleaseUnbound(ctx context.Context, owner string) (int, error) {
	if err := portalloc.ValidateOwner(owner); err != nil {
		return 0, err
	}
	all, err := s.EntryPoints.List(ctx, true)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ep := range all {
		b, err := s.open(ctx, ep, false)
		if err != nil {
			return n, err
		}
		c, err := s.Ledgers.Claims.Get(ctx, b.Claims(owner))
		if err != nil {
			return n, err
		}
		for _, proto := range []portalloc.Protocol{portalloc.TCP, portalloc.UDP} {
			cl, ok := c.Find(owner, proto)
			if !ok {
				continue
			}
			k := portalloc.Key{Protocol: proto, Port: cl.Port}
			var released bool
			var was portalloc.Entry
			err = s.Ledgers.Blocks.Update(ctx, b.Block(ledger.BlockOf(k.Port)), func(l *portalloc.Ledger) error {
				released = false
				was = l.Entries[k]
				if was.Owner != owner || was.State != portalloc.Reserved {
					return nil // bound or freed since the read
				}
				_, err := l.Release(k, owner)
				released = err == nil
				return err
			})
			if err == nil && released {
				err = s.Ledgers.Claims.Update(ctx, b.Claims(owner), func(c *portalloc.Claims) error {
					c.Drop(owner, proto, k.Port, was.Expires)
					return nil
				})
			}
			if err != nil {
				return n, fmt.Errorf("release %s on %s: %w", k, ep.ID(), err)
			}
			if released {
				n++
			}
		}
	}
	return n, nil
}
