package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) { os.Exit(controlplane.RunTests(m, &cp)) }

var (
	t0  = time.Unix(1_800_000_000, 0)
	rng = portalloc.Range{Min: 20000, Max: 30000}
)

func reserve(owner string, got *int) Op[*portalloc.Ledger] {
	return func(l *portalloc.Ledger) error {
		k, _, err := l.Reserve(owner, portalloc.TCP, rng, func(portalloc.Key) bool { return false }, t0, time.Hour)
		*got = k.Port
		return err
	}
}

func testRef(t *testing.T) Ref {
	return Ref{NamespacedName: types.NamespacedName{Namespace: cp.Namespace(t), Name: "berth-ports-service-lb"}, EntryPoint: "service.lb"}
}

// TestStaleCacheNeverOverwrites: two instances take turns; each one's cached copy
// goes stale, and neither loses the other's entry.
func TestStaleCacheNeverOverwrites(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ref := testRef(t)
	a, b := NewBlocks(cp.Client.CoreV1(), kube.ConflictBackoff), NewBlocks(cp.Client.CoreV1(), kube.ConflictBackoff)
	var pa1, pb, pa2 int
	for _, step := range []struct {
		s  *Store[*portalloc.Ledger]
		op Op[*portalloc.Ledger]
	}{{a, reserve("a1", &pa1)}, {b, reserve("b", &pb)}, {a, reserve("a2", &pa2)}} {
		if err := step.s.Update(ctx, ref, step.op); err != nil {
			t.Fatal(err)
		}
	}
	if pa1 == pb || pb == pa2 || pa1 == pa2 {
		t.Errorf("ports %d, %d, %d: want three distinct", pa1, pb, pa2)
	}
	l, err := a.Get(ctx, ref)
	if err != nil || len(l.Entries) != 3 {
		t.Errorf("ledger = %v, %v; want 3 entries", l, err)
	}
	cm, _ := cp.Client.CoreV1().ConfigMaps(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if cm.Labels[LabelLedger] != "true" || cm.Annotations[AnnotationEntryPoint] != "service.lb" {
		t.Errorf("ledger metadata = %v %v, want the ledger label and entry point", cm.Labels, cm.Annotations)
	}
}

func TestOpErrorsAreTheirOwn(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ref := testRef(t)
	s := NewBlocks(cp.Client.CoreV1(), kube.ConflictBackoff)
	var p int
	errNo := problem.New(problem.ErrInvalid, "no")
	if err := s.Update(ctx, ref, func(*portalloc.Ledger) error { return errNo }); !errors.Is(err, errNo) {
		t.Errorf("Update with a failing op = %v, want its error", err)
	}
	if err := s.Update(ctx, ref, reserve("a", &p)); err != nil {
		t.Fatal(err)
	}
	// A read-only op on a cached copy is re-checked against a fresh read.
	if _, err := cp.Client.CoreV1().ConfigMaps(ref.Namespace).Patch(ctx, ref.Name, types.MergePatchType,
		[]byte(`{"data":{"tcp.20000":null}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var found bool
	if err := s.Update(ctx, ref, func(l *portalloc.Ledger) error { _, _, found = l.Find("a", portalloc.TCP); return nil }); err != nil {
		t.Fatal(err)
	}
	if found {
		t.Error("a read-only op saw the store's stale cached copy")
	}
}

func TestCorruptLedgerIsLeftAlone(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ref := testRef(t)
	_, err := cp.Client.CoreV1().ConfigMaps(ref.Namespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ref.Name},
		Data:       map[string]string{"tcp.20000": "hand-edited"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := NewBlocks(cp.Client.CoreV1(), kube.ConflictBackoff)
	var p int
	if err := s.Update(ctx, ref, reserve("a", &p)); !errors.Is(err, portalloc.ErrCorrupt) || problem.Status(err) != 422 {
		t.Errorf("Update of a corrupt ledger = %v, want ErrCorrupt (422)", err)
	}
	cm, _ := cp.Client.CoreV1().ConfigMaps(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if len(cm.Data) != 1 || cm.Data["tcp.20000"] != "hand-edited" {
		t.Errorf("corrupt ledger was rewritten: %v", cm.Data)
	}
}

func TestOverOneMiBIs422(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ref := testRef(t)
	s := NewBlocks(cp.Client.CoreV1(), kube.ConflictBackoff)
	long := strings.Repeat("o", 240)
	err := s.Update(ctx, ref, func(l *portalloc.Ledger) error {
		for p := 20000; p < 25000; p++ {
			l.Entries[portalloc.Key{Protocol: portalloc.TCP, Port: p}] = portalloc.Entry{
				Owner: fmt.Sprintf("%s-%d", long, p), State: portalloc.Bound, Service: long}
		}
		return nil
	})
	if !errors.Is(err, ErrTooBig) || problem.Status(err) != 422 {
		t.Errorf("Update past 1 MiB = %v, want ErrTooBig (422)", err)
	}
}

// TestRecent: a store answers Recent from its own last write while that is
// younger than maxAge, so another instance's later write shows only once it
// is older; a missing ledger reads as empty.
func TestRecent(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ref := testRef(t)
	a, b := NewBlocks(cp.Client.CoreV1(), kube.ConflictBackoff), NewBlocks(cp.Client.CoreV1(), kube.ConflictBackoff)
	if l, err := a.Recent(ctx, ref, time.Hour); err != nil || len(l.Entries) != 0 {
		t.Fatalf("missing ledger: %v, %v; want empty", l, err)
	}
	var pa, pb int
	if err := a.Update(ctx, ref, reserve("a", &pa)); err != nil {
		t.Fatal(err)
	}
	if err := b.Update(ctx, ref, reserve("b", &pb)); err != nil {
		t.Fatal(err)
	}
	l, err := a.Recent(ctx, ref, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := l.Find("a", portalloc.TCP); !ok {
		t.Errorf("recent = %v: want a's own write", l.Entries)
	}
	if _, _, ok := l.Find("b", portalloc.TCP); ok {
		t.Errorf("recent = %v: b's write shows within maxAge, so it was read, not remembered", l.Entries)
	}
	delete(l.Entries, portalloc.Key{Protocol: portalloc.TCP, Port: pa}) // a copy: the store's is untouched
	if l, err = a.Recent(ctx, ref, 0); err != nil {
		t.Fatal(err)
	}
	_, _, okA := l.Find("a", portalloc.TCP)
	_, _, okB := l.Find("b", portalloc.TCP)
	if !okA || !okB {
		t.Errorf("read again = %v: want both", l.Entries)
	}
}
