package ledger

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
)

func testBook(t *testing.T) Book {
	return BookFor(cp.Namespace(t), "service", "lb")
}

// TestMigrate: a ledger in the single ConfigMap berth wrote before the split
// moves to blocks and claims; the old ConfigMap is left with only the moved
// key, which the code before the split refuses; a late copier of the same
// snapshot brings back no port released since; an entry point without the old
// ConfigMap gets one holding only the moved key, so that the older berth
// cannot start one; a read makes nothing.
func TestMigrate(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	b := testBook(t)
	tcp := func(p int) portalloc.Key { return portalloc.Key{Protocol: portalloc.TCP, Port: p} }
	old := portalloc.New()
	old.Entries[tcp(20000)] = portalloc.Entry{Owner: "team-a/x", State: portalloc.Bound, Since: t0.Unix(), Service: "team-a/x"}
	old.Entries[tcp(20300)] = portalloc.Entry{Owner: "team-b/y", State: portalloc.Reserved, Since: t0.Unix(), Expires: 4_000_000_000}
	old.Entries[tcp(20001)] = portalloc.Entry{Owner: "team-c/lapsed", State: portalloc.Reserved, Since: 1, Expires: 2}
	if _, err := cp.Client.CoreV1().ConfigMaps(b.Namespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: b.Name}, Data: old.Encode()}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff)
	if err := s.Migrate(ctx, b, false); err != nil {
		t.Fatal(err)
	}
	all, err := s.Entries(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[portalloc.Key]string{tcp(20000): "team-a/x", tcp(20300): "team-b/y"}
	if len(all.Entries) != len(want) {
		t.Errorf("entries = %v, want %v (the lapsed one dropped)", all.Entries, want)
	}
	for k, owner := range want {
		if all.Entries[k].Owner != owner {
			t.Errorf("entry %s = %+v, want owner %s", k, all.Entries[k], owner)
		}
	}
	for owner, port := range map[string]int{"team-a/x": 20000, "team-b/y": 20300} {
		c, err := s.Claims.Get(ctx, b.Claims(owner))
		if err != nil {
			t.Fatal(err)
		}
		if cl, ok := c.Find(owner, portalloc.TCP); !ok || cl.Port != port {
			t.Errorf("claim of %s = %+v %v, want port %d", owner, cl, ok, port)
		}
	}
	cm, err := cp.Client.CoreV1().ConfigMaps(b.Namespace).Get(ctx, b.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cm.Data) != 1 || cm.Data[movedKey] == "" {
		t.Errorf("old ledger after the move = %v, want only %q", cm.Data, movedKey)
	}
	if _, err := portalloc.Decode(cm.Data); !errors.Is(err, portalloc.ErrCorrupt) {
		t.Errorf("the old code's Decode of the moved ledger = %v, want ErrCorrupt, so that it reserves nothing", err)
	}
	// 20000 is released; a copier that read the old snapshot copies late.
	if err := s.Blocks.Update(ctx, b.Block(BlockOf(20000)), func(l *portalloc.Ledger) error {
		_, err := l.Release(tcp(20000), "team-a/x")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.copyEntries(ctx, b, old); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Entries(ctx, b); len(again.Entries) != 1 {
		t.Errorf("entries after a late copy = %v, want only 20300: a released port came back", again.Entries)
	}
	// Another process finds the move done.
	if err := NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff).Migrate(ctx, b, true); err != nil {
		t.Fatal(err)
	}
	// A new entry point: read, nothing is made; about to reserve, the old
	// ConfigMap is made, moved.
	fresh := BookFor(b.Namespace, "service", "fresh")
	if err := s.Migrate(ctx, fresh, false); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client.CoreV1().ConfigMaps(b.Namespace).Get(ctx, fresh.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a read of a new entry point's ledger made its old ConfigMap: %v", err)
	}
	if err := s.Migrate(ctx, fresh, true); err != nil {
		t.Fatal(err)
	}
	cm, err = cp.Client.CoreV1().ConfigMaps(b.Namespace).Get(ctx, fresh.Name, metav1.GetOptions{})
	if err != nil || len(cm.Data) != 1 || cm.Data[movedKey] == "" {
		t.Errorf("a new entry point's old ledger = %v, %v; want only %q", cm, err, movedKey)
	}
}

// TestBookLayout: entries land in the block of their port, listed back
// whole; an owner's claim is in its namespace's shard; blocks and claims of
// another entry point are not listed.
func TestBookLayout(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	b := testBook(t)
	other := BookFor(b.Namespace, "service", "lb2")
	s := NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff)
	for _, bk := range []Book{b, other} {
		for _, p := range []int{255, 256, 20000, 65535} {
			if err := s.Blocks.Update(ctx, bk.Block(BlockOf(p)), func(l *portalloc.Ledger) error {
				l.Entries[portalloc.Key{Protocol: portalloc.UDP, Port: p}] = portalloc.Entry{Owner: bk.ID(), State: portalloc.Bound}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	all, err := s.Entries(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Entries) != 4 {
		t.Errorf("entries = %v, want the 4 of %s", all.Entries, b.ID())
	}
	for k, e := range all.Entries {
		if e.Owner != b.ID() {
			t.Errorf("entry %s of %s listed with %s's", k, e.Owner, b.ID())
		}
	}
	if b.Block(BlockOf(255)).Name == b.Block(BlockOf(256)).Name {
		t.Error("ports 255 and 256 share a block")
	}
	if b.Claims("team-a/x").Name != b.Claims("team-a/y").Name || b.Claims("team-a/x").Name != b.ClaimsOf("team-a").Name {
		t.Error("one namespace's owners have claims in different shards")
	}
}

// TestRead: a read moves an old ledger as Migrate does, in any state it
// finds it, and lists a book whose old ledger is cut in one round trip
// (the fence's labels put it in the list of blocks).
func TestRead(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	tcp := func(p int) portalloc.Key { return portalloc.Key{Protocol: portalloc.TCP, Port: p} }
	b := testBook(t)
	cms := cp.Client.CoreV1().ConfigMaps(b.Namespace)
	read := func(name string, bk Book, want ...int) *Books {
		t.Helper()
		s := NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff)
		l, err := s.Read(ctx, bk)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(l.Entries) != len(want) {
			t.Errorf("%s: entries = %v, want ports %v", name, l.Entries, want)
		}
		for _, p := range want {
			if _, ok := l.Entries[tcp(p)]; !ok {
				t.Errorf("%s: entries = %v, want port %d", name, l.Entries, p)
			}
		}
		return s
	}

	// No old ledger: the blocks, and nothing is written.
	fresh := BookFor(b.Namespace, "service", "never")
	read("no old ledger", fresh)
	if _, err := cms.Get(ctx, fresh.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a read made the old ledger of an entry point without one: %v", err)
	}

	// An old, unlabelled ledger with entries: moved, then read, and the
	// cut ledger carries the fence's labels.
	old := portalloc.New()
	old.Entries[tcp(20000)] = portalloc.Entry{Owner: "team-a/x", State: portalloc.Bound, Since: t0.Unix(), Service: "team-a/x"}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: b.Name}, Data: old.Encode()}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	read("old ledger", b, 20000)
	cm, err := cms.Get(ctx, b.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !cut(cm) || cm.Labels[LabelPart] != partMoved || cm.Labels[LabelEntryPointName] != b.EntryPointName {
		t.Errorf("old ledger after a read = %v %v, want cut and labelled a fence", cm.Data, cm.Labels)
	}

	// Cut and labelled: read in one list, and the process remembers.
	s := read("cut ledger", b, 20000)
	if _, ok := s.migrated.Load(types.NamespacedName{Namespace: b.Namespace, Name: b.Name}); !ok {
		t.Error("a read that listed the cut ledger did not remember the book as moved")
	}

	// Fenced but not yet cut (a mover stopped between fence and cut): the
	// read finishes the move.
	mid := BookFor(b.Namespace, "service", "mid")
	old = portalloc.New()
	old.Entries[tcp(20100)] = portalloc.Entry{Owner: "team-b/y", State: portalloc.Bound, Since: t0.Unix(), Service: "team-b/y"}
	data := old.Encode()
	data[movedKey] = "to elsewhere"
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: mid.ref(mid.Name, partMoved).meta(), Data: data}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	read("fenced ledger", mid, 20100)
	if cm, err := cms.Get(ctx, mid.Name, metav1.GetOptions{}); err != nil || !cut(cm) {
		t.Errorf("fenced ledger after a read = %v, %v; want cut", cm, err)
	}
}

// TestReadListed: one list of a namespace's ledgers reads every book in it:
// a book without an old ledger and one whose old ledger is cut from the
// list; one whose old ledger (as berth wrote it before the split, labelled
// a ledger only) still holds entries is moved first. Claims are not listed.
func TestReadListed(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	tcp := func(p int) portalloc.Key { return portalloc.Key{Protocol: portalloc.TCP, Port: p} }
	ns := cp.Namespace(t)
	cms := cp.Client.CoreV1().ConfigMaps(ns)
	s := NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff)
	fresh, moved, old := BookFor(ns, "service", "fresh"), BookFor(ns, "service", "moved"), BookFor(ns, "gateway", "old")
	put := func(b Book, port int) {
		t.Helper()
		if err := s.Blocks.Update(ctx, b.Block(BlockOf(port)), func(l *portalloc.Ledger) error {
			l.Entries[tcp(port)] = portalloc.Entry{Owner: "team-a/" + b.EntryPointName, State: portalloc.Bound, Service: "team-a/x"}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	put(fresh, 20000)
	put(moved, 20001)
	put(moved, 20301)
	if err := s.Migrate(ctx, moved, true); err != nil { // fenced and cut: nothing to move
		t.Fatal(err)
	}
	if err := s.Claims.Update(ctx, moved.Claims("team-a/x"), func(c *portalloc.Claims) error {
		c.Put(portalloc.TCP, portalloc.Claim{Owner: "team-a/x", Port: 20001})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before := portalloc.New()
	before.Entries[tcp(20002)] = portalloc.Entry{Owner: "team-b/y", State: portalloc.Bound, Since: t0.Unix(), Service: "team-b/y"}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: old.Name,
		Labels: map[string]string{kube.LabelManagedBy: kube.ManagedBy, LabelLedger: "true"}}, Data: before.Encode()}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	l, err := NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff).List(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{fresh.ID(): 1, moved.ID(): 2, old.ID(): 0} {
		if got := len(l.blocks[name]); got != n {
			t.Errorf("listed blocks of %s = %d, want %d", name, got, n)
		}
	}
	if len(l.old) != 2 || l.old[moved.Name] == nil || l.old[old.Name] == nil {
		t.Errorf("listed old ledgers = %v, want %s and %s (and no claims)", slices.Collect(maps.Keys(l.old)), moved.Name, old.Name)
	}
	reader := NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff)
	for b, want := range map[Book][]int{fresh: {20000}, moved: {20001, 20301}, old: {20002}} {
		got, err := reader.ReadListed(ctx, l, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Entries) != len(want) {
			t.Errorf("%s: entries = %v, want ports %v", b.ID(), got.Entries, want)
		}
		for _, p := range want {
			if _, ok := got.Entries[tcp(p)]; !ok {
				t.Errorf("%s: entries = %v, want port %d", b.ID(), got.Entries, p)
			}
		}
	}
	if cm, err := cms.Get(ctx, old.Name, metav1.GetOptions{}); err != nil || !cut(cm) {
		t.Errorf("old ledger after ReadListed = %v, %v; want it moved and cut", cm, err)
	}
	// An old ledger whose ports were all released has no data at all.
	empty := BookFor(ns, "service", "empty")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: empty.Name,
		Labels: map[string]string{kube.LabelManagedBy: kube.ManagedBy, LabelLedger: "true"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	l, err = reader.List(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := reader.ReadListed(ctx, l, empty); err != nil || len(got.Entries) != 0 {
		t.Errorf("ReadListed of an empty old ledger = %v, %v; want no entries", got, err)
	}
	if cm, err := cms.Get(ctx, empty.Name, metav1.GetOptions{}); err != nil || !cut(cm) {
		t.Errorf("empty old ledger after a read = %v, %v; want it fenced and cut", cm, err)
	}
	// A book of another namespace is read by itself.
	other := BookFor(cp.Namespace(t), "service", "elsewhere")
	if got, err := reader.ReadListed(ctx, l, other); err != nil || len(got.Entries) != 0 {
		t.Errorf("ReadListed of another namespace's book = %v, %v; want no entries", got, err)
	}
}
