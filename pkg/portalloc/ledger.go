// Package portalloc is the pure logic of berth's port ledger: which ports of a
// range are reserved or bound, for which owner, until when. It does no I/O; the
// ledger package stores a Ledger in a ConfigMap by compare-and-swap.
//
// Every operation either changes the ledger and returns nil, or returns an error
// and changes nothing, so that a batch of operations can be re-applied to a fresh
// copy after a write conflict.
package portalloc

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/berth-dev/berth/pkg/problem"
)

// Protocol is a transport protocol. TCP and UDP ports are separate spaces.
type Protocol string

// The protocols berth allocates ports for.
const (
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// ParseProtocol reads a protocol case-insensitively; "" means TCP.
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToUpper(s) {
	case "", "TCP":
		return TCP, nil
	case "UDP":
		return UDP, nil
	}
	return "", fmt.Errorf("%w: %q", ErrBadProtocol, problem.Clip(s))
}

// MaxOwnerBytes bounds an owner key. A ledger is split (package ledger) into
// blocks of 256 ports, which hold at most 512 entries of this size, and claims
// by namespace, whose size the namespace quota bounds.
const MaxOwnerBytes = 136

// ValidateOwner checks an owner key: namespace/name, or (inside berth) any key.
func ValidateOwner(owner string) error {
	if owner == "" || len(owner) > MaxOwnerBytes {
		return ErrBadOwner
	}
	for _, r := range owner {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return ErrBadOwner
		}
	}
	return nil
}

// OwnerNamespace returns the namespace an owner key lives in: the owner is
// <namespace>/<name>, with a namespace name and a name of 1-72 letters, digits
// and '-', '.', '_' or ':' (a Service name, ':' and a port number fit). An
// owner it accepts is a valid owner key (ValidateOwner): at most 136 bytes,
// printable, without spaces.
func OwnerNamespace(owner string) (string, error) {
	ns, name, ok := strings.Cut(owner, "/")
	if !ok || len(validation.IsDNS1123Label(ns)) > 0 || name == "" || len(name) > 72 {
		return "", fmt.Errorf("%w: %q", ErrOwnerNamespace, problem.Clip(owner))
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._:", r)) {
			return "", fmt.Errorf("%w: %q", ErrOwnerNamespace, problem.Clip(owner))
		}
	}
	return ns, nil
}

// Range is an inclusive range of ports.
type Range struct{ Min, Max int }

// Contains reports whether p is in r.
func (r Range) Contains(p int) bool { return p >= r.Min && p <= r.Max }

// Size is the number of ports in r.
func (r Range) Size() int { return r.Max - r.Min + 1 }

func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// Validate reports a range that is empty or outside 1-65535.
func (r Range) Validate() error {
	if r.Min < 1 || r.Max > 65535 || r.Min > r.Max {
		return fmt.Errorf("%w: %s", ErrNotInRange, r)
	}
	return nil
}

// State is where an entry is in its life.
type State string

const (
	// Reserved is handed out and not yet routed; it expires.
	Reserved State = "reserved"
	// Bound is routed to a Service; it lives until released or found orphaned.
	Bound State = "bound"
)

// Key names one port of one protocol.
type Key struct {
	Protocol Protocol
	Port     int
}

// String is the key's ConfigMap data key: "tcp.20001".
func (k Key) String() string { return strings.ToLower(string(k.Protocol)) + "." + strconv.Itoa(k.Port) }

// ParseKey reads a ConfigMap data key.
func ParseKey(s string) (Key, error) {
	proto, port, ok := strings.Cut(s, ".")
	p, err := ParseProtocol(proto)
	if !ok || proto == "" || err != nil {
		return Key{}, fmt.Errorf("%w: key %q", ErrCorrupt, problem.Clip(s))
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return Key{}, fmt.Errorf("%w: key %q", ErrCorrupt, problem.Clip(s))
	}
	return Key{Protocol: p, Port: n}, nil
}

// Entry is one port's record. Field names are short and times are Unix seconds, so
// that a block of a ledger stays small: the API server writes a ConfigMap of
// 25 KB about as fast as one of 1 KB.
type Entry struct {
	// Owner is who holds the port: namespace/release, or any caller's key.
	Owner string `json:"o"`
	// State is reserved or bound.
	State State `json:"s"`
	// Since is when the entry was reserved, or bound.
	Since int64 `json:"t"`
	// Expires is when a reserved entry lapses; 0 for bound entries.
	Expires int64 `json:"x,omitempty"`
	// Service is namespace/name of the Service a bound port routes to.
	Service string `json:"svc,omitempty"`
	// Orphaned is when a sweep first found Service missing; 0 while it exists.
	Orphaned int64 `json:"m,omitempty"`
}

// Expired reports whether e is a reservation that has lapsed at now.
func (e Entry) Expired(now time.Time) bool {
	return e.State == Reserved && e.Expires != 0 && now.Unix() >= e.Expires
}

// Ledger is the set of entries of one entry point.
type Ledger struct {
	Entries map[Key]Entry
}

// New returns an empty ledger.
func New() *Ledger { return &Ledger{Entries: map[Key]Entry{}} }

// Clone returns a deep copy.
func (l *Ledger) Clone() *Ledger { return &Ledger{Entries: maps.Clone(l.Entries)} }

// Find returns the port owner holds for proto, if any.
func (l *Ledger) Find(owner string, proto Protocol) (Key, Entry, bool) {
	for k, e := range l.Entries {
		if e.Owner == owner && k.Protocol == proto {
			return k, e, true
		}
	}
	return Key{}, Entry{}, false
}

// InUse reports which ports are taken on an entry point outside the ledger (its
// own Service ports or listeners, ingress-nginx entries).
type InUse func(Key) bool

// Free counts the ports of r free for proto at now.
func (l *Ledger) Free(proto Protocol, r Range, inUse InUse, now time.Time) int {
	return l.Usage(proto, r, inUse, now).Free
}

// Usage is how the ports of a range are used, for one protocol.
type Usage struct {
	// Reserved and Bound are the ledger's live entries.
	Reserved int `json:"reserved"`
	Bound    int `json:"bound"`
	// InUse are the other ports the entry point serves outside the ledger.
	InUse int `json:"inUse"`
	// Free are the rest: what a reservation may still get.
	Free int `json:"free"`
}

// Usage counts the ports of r for proto at now by how they are used.
func (l *Ledger) Usage(proto Protocol, r Range, inUse InUse, now time.Time) Usage {
	var u Usage
	for p := r.Min; p <= r.Max; p++ {
		k := Key{proto, p}
		e, held := l.Entries[k]
		live := held && !e.Expired(now)
		switch {
		case live && e.State == Bound:
			u.Bound++
		case live:
			u.Reserved++
		case inUse(k):
			u.InUse++
		default:
			u.Free++
		}
	}
	return u
}

// free reports whether k is neither held in the ledger nor in use at now.
func (l *Ledger) free(k Key, inUse InUse, now time.Time) bool {
	e, ok := l.Entries[k]
	return (!ok || e.Expired(now)) && !inUse(k)
}

// Reserve gives owner a port of r for proto. An owner that holds one already gets
// it again (a reservation's expiry is renewed). An owner that holds a port of the
// other protocol gets the same number if it is free, so an app that speaks TCP
// and UDP answers on one <ip>:<port>. Otherwise the lowest free port is taken;
// lapsed reservations count as free and are dropped as they are met.
func (l *Ledger) Reserve(owner string, proto Protocol, r Range, inUse InUse, now time.Time, ttl time.Duration) (Key, Entry, error) {
	if k, e, ok := l.Find(owner, proto); ok && !e.Expired(now) {
		if e.State == Reserved {
			e.Expires = now.Add(ttl).Unix()
			l.Entries[k] = e
		}
		return k, e, nil
	}
	take := func(k Key) (Key, Entry, error) {
		e := Entry{Owner: owner, State: Reserved, Since: now.Unix(), Expires: now.Add(ttl).Unix()}
		l.dropLapsed(owner, proto, now)
		l.Entries[k] = e
		return k, e, nil
	}
	if other, e, ok := l.Find(owner, proto.Other()); ok && !e.Expired(now) && r.Contains(other.Port) {
		if k := (Key{proto, other.Port}); l.free(k, inUse, now) {
			return take(k)
		}
	}
	for p := r.Min; p <= r.Max; p++ {
		if k := (Key{proto, p}); l.free(k, inUse, now) {
			return take(k)
		}
	}
	return Key{}, Entry{}, fmt.Errorf("%w: no %s port free in %s", ErrFull, proto, r)
}

// Take gives owner port k, as a reservation until now+ttl: a port the owner
// holds already is given again (a reservation's expiry renewed), a free one
// is taken (created), and a port someone else holds, or that is in use
// outside the ledger, is ErrHeld.
func (l *Ledger) Take(k Key, owner string, inUse InUse, now time.Time, ttl time.Duration) (_ Entry, created bool, _ error) {
	if e, ok := l.Entries[k]; ok && !e.Expired(now) {
		if e.Owner != owner {
			return Entry{}, false, fmt.Errorf("%w: %s", ErrHeld, k)
		}
		if e.State == Reserved {
			e.Expires = now.Add(ttl).Unix()
			l.Entries[k] = e
		}
		return e, false, nil
	}
	if inUse(k) {
		return Entry{}, false, fmt.Errorf("%w: %s is in use", ErrHeld, k)
	}
	e := Entry{Owner: owner, State: Reserved, Since: now.Unix(), Expires: now.Add(ttl).Unix()}
	l.Entries[k] = e
	return e, true, nil
}

// Other is the other transport protocol.
func (p Protocol) Other() Protocol {
	if p == TCP {
		return UDP
	}
	return TCP
}

// dropLapsed removes owner's lapsed reservation for proto, so that an owner never
// holds two entries.
func (l *Ledger) dropLapsed(owner string, proto Protocol, now time.Time) {
	for k, e := range l.Entries {
		if e.Owner == owner && k.Protocol == proto && e.Expired(now) {
			delete(l.Entries, k)
		}
	}
}

// Release frees k. With owner set, it refuses a port held by someone else.
// Releasing a free port is not an error: it reports false.
func (l *Ledger) Release(k Key, owner string) (bool, error) {
	e, ok := l.Entries[k]
	if !ok {
		return false, nil
	}
	if owner != "" && e.Owner != owner {
		return false, fmt.Errorf("%w: %s", ErrHeld, k)
	}
	delete(l.Entries, k)
	return true, nil
}

// Bind marks owner's reservation of k as routed to service (namespace/name).
// Binding again to the same service changes nothing.
func (l *Ledger) Bind(k Key, owner, service string, now time.Time) (Entry, error) {
	e, ok := l.Entries[k]
	switch {
	case !ok || e.Expired(now):
		return Entry{}, fmt.Errorf("%w: %s", ErrNotReserved, k)
	case e.Owner != owner:
		return Entry{}, fmt.Errorf("%w: %s", ErrHeld, k)
	case e.State == Bound && e.Service == service:
		return e, nil
	case e.State == Bound:
		return Entry{}, fmt.Errorf("%w: %s routes to %s", ErrRebind, k, e.Service)
	}
	e = Entry{Owner: owner, State: Bound, Since: now.Unix(), Service: service}
	l.Entries[k] = e
	return e, nil
}

// Unbind undoes owner's Bind of k to service, whose routing could not be made:
// the entry becomes prev again, what it was before the Bind (the zero Entry:
// none, the port is free). It reports whether there was such a binding;
// anything else at k is left alone.
func (l *Ledger) Unbind(k Key, owner, service string, prev Entry) bool {
	e, ok := l.Entries[k]
	if !ok || e.Owner != owner || e.State != Bound || e.Service != service {
		return false
	}
	if prev == (Entry{}) {
		delete(l.Entries, k)
	} else {
		l.Entries[k] = prev
	}
	return true
}

// Expire drops every lapsed reservation and returns their keys.
func (l *Ledger) Expire(now time.Time) []Key {
	var gone []Key
	for k, e := range l.Entries {
		if e.Expired(now) {
			delete(l.Entries, k)
			gone = append(gone, k)
		}
	}
	return sortKeys(gone)
}

// Sweep is one pass of leak repair over bound entries. exists reports whether a
// Service (namespace/name) exists. As in the kube-apiserver's repair loop, an
// entry is freed only when it was found orphaned on an earlier sweep too: the
// first sweep marks it, a later one frees it, and a Service that reappears clears
// the mark.
func (l *Ledger) Sweep(exists func(service string) bool, now time.Time) (marked, freed []Key) {
	for k, e := range l.Entries {
		if e.State != Bound {
			continue
		}
		switch {
		case exists(e.Service):
			if e.Orphaned != 0 {
				e.Orphaned = 0
				l.Entries[k] = e
			}
		case e.Orphaned == 0:
			e.Orphaned = now.Unix()
			l.Entries[k] = e
			marked = append(marked, k)
		default:
			delete(l.Entries, k)
			freed = append(freed, k)
		}
	}
	return sortKeys(marked), sortKeys(freed)
}

// Keys returns the ledger's keys in protocol, then port order.
func (l *Ledger) Keys() []Key { return sortKeys(slices.Collect(maps.Keys(l.Entries))) }

func sortKeys(ks []Key) []Key {
	slices.SortFunc(ks, func(a, b Key) int {
		if c := strings.Compare(string(a.Protocol), string(b.Protocol)); c != 0 {
			return c
		}
		return a.Port - b.Port
	})
	return ks
}

// Encode writes the ledger as ConfigMap data: one key per port.
func (l *Ledger) Encode() map[string]string {
	data := make(map[string]string, len(l.Entries))
	for k, e := range l.Entries {
		b, _ := json.Marshal(e)
		data[k.String()] = string(b)
	}
	return data
}

// Decode reads ConfigMap data written by Encode. An entry it cannot read is an
// error: berth never overwrites what it does not understand.
func Decode(data map[string]string) (*Ledger, error) {
	l := New()
	for s, v := range data {
		k, err := ParseKey(s)
		if err != nil {
			return nil, err
		}
		var e Entry
		if err := json.Unmarshal([]byte(v), &e); err != nil || e.Owner == "" || (e.State != Reserved && e.State != Bound) {
			return nil, fmt.Errorf("%w: %s", ErrCorrupt, s)
		}
		l.Entries[k] = e
	}
	return l, nil
}
