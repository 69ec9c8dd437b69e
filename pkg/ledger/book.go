package ledger

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// The layout of a split ledger.
const (
	// BlockPorts is how many port numbers one block holds, for both protocols:
	// a full block of bound ports is about 25 KB, which the API server writes
	// as fast as 1 KB (BenchmarkLedgerFill).
	BlockPorts = 256
	// ClaimShards is how many ConfigMaps hold an entry point's claims. An
	// owner's claim is in the shard of its namespace, so that a namespace's
	// quota is counted in the write that reserves.
	ClaimShards = 256
)

// Labels on a split ledger's ConfigMaps, to list them.
const (
	LabelPart           = "berth.dev/ledger-part"
	LabelEntryPointKind = "berth.dev/entry-point-kind"
	LabelEntryPointName = "berth.dev/entry-point-name"

	partBlock  = "block"
	partClaims = "claims"
	partMoved  = "moved"
)

// absentMaxAge is how long a read remembers that an entry point has no old
// ledger and no fence yet (no reservation was made on it): reads need not look
// again; a reservation always does.
const absentMaxAge = 5 * time.Second

// movedKey is the only key of a ledger ConfigMap from before the split once
// its entries are moved: berth versions that wrote it refuse a key they cannot
// read, rather than reserve a port from an empty ledger.
const movedKey = "moved"

// Book is one entry point's ledger, split over ConfigMaps in the entry point's
// namespace: <name>-b<n> holds the entries of ports n*256 to n*256+255,
// <name>-c<n> the claims of owners whose namespace hashes to n. <name> alone
// is the whole ledger as berth wrote it before the split.
type Book struct {
	Namespace string
	// Name is berth-ports-<kind>-<name>.
	Name string
	// Kind and EntryPointName name the entry point.
	Kind, EntryPointName string
}

// BookFor is the ledger of the entry point kind.name in namespace.
func BookFor(namespace, kind, name string) Book {
	return Book{Namespace: namespace, Name: "berth-ports-" + kind + "-" + name, Kind: kind, EntryPointName: name}
}

// ID is the entry point's id, <kind>.<name>.
func (b Book) ID() string { return b.Kind + "." + b.EntryPointName }

func (b Book) ref(name, part string) Ref {
	return Ref{
		NamespacedName: types.NamespacedName{Namespace: b.Namespace, Name: name},
		EntryPoint:     b.ID(),
		Labels:         map[string]string{LabelPart: part, LabelEntryPointKind: b.Kind, LabelEntryPointName: b.EntryPointName},
	}
}

// Block is the number of a block of ports: port / BlockPorts.
type Block int

func (n Block) String() string { return strconv.Itoa(int(n)) }

// BlockOf is the block port is in.
func BlockOf(port int) Block { return Block(port / BlockPorts) }

// Ports is the range of ports block n holds.
func (n Block) Ports() portalloc.Range {
	return portalloc.Range{Min: int(n) * BlockPorts, Max: int(n)*BlockPorts + BlockPorts - 1}
}

// Block names block n's ConfigMap.
func (b Book) Block(n Block) Ref { return b.ref(b.Name+"-b"+n.String(), partBlock) }

// Claims names the ConfigMap of owner's claims.
func (b Book) Claims(owner string) Ref {
	key := owner
	if ns, _, ok := strings.Cut(owner, "/"); ok {
		key = ns
	}
	return b.ClaimsOf(key)
}

// ClaimsOf names the ConfigMap of the claims of namespace ns's owners.
func (b Book) ClaimsOf(ns string) Ref {
	h := fnv.New32a()
	h.Write([]byte(ns))
	return b.ref(b.Name+"-c"+strconv.Itoa(int(h.Sum32()%ClaimShards)), partClaims)
}

func (b Book) selector(parts ...string) string {
	return labels.Set{LabelEntryPointKind: b.Kind, LabelEntryPointName: b.EntryPointName}.String() +
		"," + LabelPart + " in (" + strings.Join(parts, ",") + ")"
}

// Books stores split ledgers: their blocks and claims, each by
// compare-and-swap with group commit.
type Books struct {
	Blocks *Store[*portalloc.Ledger]
	Claims *Store[*portalloc.Claims]

	client   corev1client.ConfigMapsGetter
	migrated sync.Map // types.NamespacedName of a book: struct{}
	absent   sync.Map // types.NamespacedName of a book without a ledger: when read
}

// NewBooks returns split ledgers written through client.
func NewBooks(client corev1client.ConfigMapsGetter, backoff wait.Backoff) *Books {
	return &Books{Blocks: NewBlocks(client, backoff), Claims: NewClaims(client, backoff), client: client}
}

// Entries reads every entry of the book, from a consistent list of its
// blocks.
func (s *Books) Entries(ctx context.Context, b Book) (*portalloc.Ledger, error) {
	cms, err := s.list(ctx, b, partBlock)
	if err != nil {
		return nil, err
	}
	return entries(cms)
}

// entries merges the entries of blocks.
func entries(cms []corev1.ConfigMap) (*portalloc.Ledger, error) {
	all := portalloc.New()
	for _, cm := range cms {
		l, err := portalloc.Decode(cm.Data)
		if err != nil {
			return nil, fmt.Errorf("ledger %s: %w", cm.Name, err)
		}
		for k, e := range l.Entries {
			all.Entries[k] = e
		}
	}
	return all, nil
}

// Shard is one ConfigMap of claims.
type Shard struct {
	Ref    Ref
	Claims *portalloc.Claims
}

// AllClaims reads every claim of the book, shard by shard.
func (s *Books) AllClaims(ctx context.Context, b Book) ([]Shard, error) {
	cms, err := s.list(ctx, b, partClaims)
	if err != nil {
		return nil, err
	}
	out := make([]Shard, 0, len(cms))
	for _, cm := range cms {
		c, err := portalloc.DecodeClaims(cm.Data)
		if err != nil {
			return nil, fmt.Errorf("ledger %s: %w", cm.Name, err)
		}
		ref := b.ref(cm.Name, partClaims)
		out = append(out, Shard{Ref: ref, Claims: c})
	}
	return out, nil
}

func (s *Books) list(ctx context.Context, b Book, parts ...string) ([]corev1.ConfigMap, error) {
	cms, err := s.listSelected(ctx, b.Namespace, b.selector(parts...))
	if err != nil {
		return nil, fmt.Errorf("list ledger %s/%s: %w", b.Namespace, b.Name, err)
	}
	return cms, nil
}

// listSelected lists namespace's ConfigMaps that selector selects, page by
// page, all pages at the first one's resourceVersion.
func (s *Books) listSelected(ctx context.Context, namespace, selector string) ([]corev1.ConfigMap, error) {
	var out []corev1.ConfigMap
	opts := metav1.ListOptions{LabelSelector: selector, Limit: 100}
	for {
		l, err := s.client.ConfigMaps(namespace).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, l.Items...)
		if l.Continue == "" {
			return out, nil
		}
		opts.Continue = l.Continue
	}
}

// Migrate moves the book's ledger from the single ConfigMap berth wrote before
// the split into blocks and claims, once per process, before anything else is
// done with the book:
//
//  1. it fences the old ConfigMap by compare-and-swap: adds movedKey to it,
//     which the berth before the split refuses to read, so that nothing
//     changes it any more; where there is none, and fence is set, it creates
//     it with movedKey alone, so that the older berth cannot start one (a
//     caller about to take a port sets fence; others change nothing where
//     there is nothing to move);
//  2. it copies the fenced entries to blocks and claims, creating each
//     ConfigMap only where none exists: one that exists was copied already, by
//     this process or another, and may have changed since;
//  3. it leaves only movedKey in the old ConfigMap.
func (s *Books) Migrate(ctx context.Context, b Book, fence bool) error {
	key := types.NamespacedName{Namespace: b.Namespace, Name: b.Name}
	if _, ok := s.migrated.Load(key); ok {
		return nil
	}
	if at, ok := s.absent.Load(key); ok && !fence && time.Since(at.(time.Time)) < absentMaxAge {
		return nil // read without a ledger a moment ago: counting a quota reads it per request
	}
	cms := s.client.ConfigMaps(b.Namespace)
	moved := fmt.Sprintf("to %s-b* and %s-c*", b.Name, b.Name)
	for range 10 {
		cm, err := cms.Get(ctx, b.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err) && !fence:
			s.absent.Store(key, time.Now())
			return nil
		case apierrors.IsNotFound(err):
			_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: b.ref(b.Name, partMoved).meta(),
				Data: map[string]string{movedKey: moved}}, metav1.CreateOptions{})
		case err != nil:
		case cm.Data[movedKey] == "":
			if cm.Data == nil { // every port released: the API server drops empty data
				cm.Data = map[string]string{}
			}
			cm.Data[movedKey] = moved
			labelMoved(cm, b)
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		case len(cm.Data) > 1:
			old := maps.Clone(cm.Data)
			delete(old, movedKey)
			l, derr := portalloc.Decode(old)
			if derr != nil {
				return fmt.Errorf("ledger %s: %w", key, derr)
			}
			if err := s.copyEntries(ctx, b, l); err != nil {
				return err
			}
			cm.Data = map[string]string{movedKey: moved}
			labelMoved(cm, b)
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		default:
			s.migrated.Store(key, struct{}{})
			return nil
		}
		if err != nil && !kube.LostRace(err) {
			return fmt.Errorf("move ledger %s: %w", key, err)
		}
	}
	return fmt.Errorf("%w: moving %s", ErrContended, key)
}

// labelMoved gives cm, the book's ledger from before the split, the labels
// of a fence, so that Read finds it in the list of the book's blocks.
func labelMoved(cm *corev1.ConfigMap, b Book) {
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	maps.Copy(cm.Labels, b.ref(b.Name, partMoved).meta().Labels)
}

// Read returns every entry of the book, as Entries does, once the book is
// moved to its split layout (Migrate without a fence). It asks in one round
// trip where it can: one consistent list of the blocks and of the old
// ledger, if labelled a fence, beside a GET of the old ledger in case it is
// not. Blocks listed with the old ledger cut down to movedKey hold every
// entry: the cut comes after the copy, and nothing undoes it.
func (s *Books) Read(ctx context.Context, b Book) (*portalloc.Ledger, error) {
	key := types.NamespacedName{Namespace: b.Namespace, Name: b.Name}
	if _, ok := s.migrated.Load(key); ok {
		return s.Entries(ctx, b)
	}
	var (
		getErr error
		wg     sync.WaitGroup
	)
	wg.Go(func() { _, getErr = s.client.ConfigMaps(b.Namespace).Get(ctx, b.Name, metav1.GetOptions{}) })
	cms, err := s.list(ctx, b, partBlock, partMoved)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	fenced := slices.IndexFunc(cms, func(cm corev1.ConfigMap) bool { return cm.Name == b.Name })
	switch {
	case fenced >= 0 && s.settled(b, &cms[fenced]):
		return entries(slices.Delete(cms, fenced, fenced+1))
	case fenced < 0 && apierrors.IsNotFound(getErr):
		// No old ledger when listed, nor after: nothing to move.
		s.settled(b, nil)
		return entries(cms)
	}
	// An old ledger being moved, or one moved without the fence's labels.
	return s.moveAndRead(ctx, b)
}

// settled reports whether the blocks of book b listed beside old, its old
// ledger as the same list showed it (nil: none), hold all its entries: old
// is absent or cut. It remembers which.
func (s *Books) settled(b Book, old *corev1.ConfigMap) bool {
	key := types.NamespacedName{Namespace: b.Namespace, Name: b.Name}
	switch {
	case old == nil:
		s.absent.Store(key, time.Now())
	case cut(old):
		s.migrated.Store(key, struct{}{})
	default:
		return false
	}
	return true
}

// moveAndRead moves book b's old ledger (or learns that it is moved), then
// lists its blocks.
func (s *Books) moveAndRead(ctx context.Context, b Book) (*portalloc.Ledger, error) {
	if err := s.Migrate(ctx, b, false); err != nil {
		return nil, err
	}
	return s.Entries(ctx, b)
}

// Listing is one consistent list of a namespace's ledgers: every block, and
// every ledger from before the split, fenced, cut or neither (each carries
// LabelLedger, as berth has always labelled its ledgers). Claims are left
// out.
type Listing struct {
	namespace string
	blocks    map[string][]corev1.ConfigMap // by entry point: kind.name
	old       map[string]*corev1.ConfigMap  // by name
}

// List lists namespace's ledgers, all books at once: a caller that reads
// every entry point's ledger waits on one round trip, and can make it while
// it lists the entry points themselves.
func (s *Books) List(ctx context.Context, namespace string) (*Listing, error) {
	cms, err := s.listSelected(ctx, namespace, LabelLedger+"=true,"+LabelPart+"!="+partClaims)
	if err != nil {
		return nil, fmt.Errorf("list ledgers in %s: %w", namespace, err)
	}
	l := &Listing{namespace: namespace, blocks: map[string][]corev1.ConfigMap{}, old: map[string]*corev1.ConfigMap{}}
	for i := range cms {
		cm := &cms[i]
		if cm.Labels[LabelPart] == partBlock {
			id := cm.Labels[LabelEntryPointKind] + "." + cm.Labels[LabelEntryPointName]
			l.blocks[id] = append(l.blocks[id], *cm)
		} else {
			l.old[cm.Name] = cm
		}
	}
	return l, nil
}

// EntryPoints returns the ids (kind.name) of the entry points the listing
// holds blocks of, in no order.
func (l *Listing) EntryPoints() []string {
	return slices.Collect(maps.Keys(l.blocks))
}

// Entries returns every entry of the blocks the listing holds of entry
// point id, as listed (nothing is read or moved).
func (l *Listing) Entries(id string) (*portalloc.Ledger, error) {
	return entries(l.blocks[id])
}

// Version names the state of the blocks the listing holds of entry point
// id: it changes when any of them is written, created or deleted.
func (l *Listing) Version(id string) string {
	var b strings.Builder
	for _, cm := range slices.SortedFunc(slices.Values(l.blocks[id]), func(a, b corev1.ConfigMap) int { return strings.Compare(a.Name, b.Name) }) {
		fmt.Fprintf(&b, "%s@%s,", cm.Name, cm.ResourceVersion)
	}
	return b.String()
}

// ReadListed returns every entry of book b, from l if b is in l's
// namespace and l shows b's old ledger absent or cut; else it moves the old
// ledger and lists b's blocks (or reads b by itself, if l is not of its
// namespace).
func (s *Books) ReadListed(ctx context.Context, l *Listing, b Book) (*portalloc.Ledger, error) {
	if l == nil || b.Namespace != l.namespace {
		return s.Read(ctx, b)
	}
	if s.settled(b, l.old[b.Name]) {
		return entries(l.blocks[b.ID()])
	}
	return s.moveAndRead(ctx, b)
}

// cut reports whether cm, an old ledger, is cut down to movedKey: its
// entries are in blocks and claims.
func cut(cm *corev1.ConfigMap) bool { return len(cm.Data) == 1 && cm.Data[movedKey] != "" }

// copyEntries creates the blocks and claims of old's live entries, each only
// where none exists.
func (s *Books) copyEntries(ctx context.Context, b Book, old *portalloc.Ledger) error {
	now := time.Now()
	blocks := map[Block]*portalloc.Ledger{}
	claims := map[string]*portalloc.Claims{}
	refs := map[string]Ref{}
	for k, e := range old.Entries {
		if e.Expired(now) {
			continue
		}
		n := BlockOf(k.Port)
		if blocks[n] == nil {
			blocks[n] = portalloc.New()
		}
		blocks[n].Entries[k] = e
		r := b.Claims(e.Owner)
		if claims[r.Name] == nil {
			claims[r.Name], refs[r.Name] = portalloc.NewClaims(), r
		}
		if _, ok := claims[r.Name].Find(e.Owner, k.Protocol); !ok {
			claims[r.Name].Put(k.Protocol, portalloc.Claim{Owner: e.Owner, Port: k.Port, Since: e.Since, Expires: e.Expires})
		}
	}
	for n, l := range blocks {
		if err := s.create(ctx, b.Block(n), l.Encode()); err != nil {
			return err
		}
	}
	for name, c := range claims {
		if err := s.create(ctx, refs[name], c.Encode()); err != nil {
			return err
		}
	}
	return nil
}

// create creates ref's ConfigMap with data, unless it exists.
func (s *Books) create(ctx context.Context, ref Ref, data map[string]string) error {
	_, err := s.client.ConfigMaps(ref.Namespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: ref.meta(), Data: data}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("write ledger %s: %w", ref.NamespacedName, err)
	}
	return nil
}
