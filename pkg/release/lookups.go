package release

import (
	"slices"
	"sync"

	helmrelease "helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
)

// lookups is a namespace's release storage that answers Helm's next reading
// of a release's history from the reading berth made just before, under the
// release's lock: install's name check (Install.availableName) and upgrade's
// last revision read the records berth read to decide what to do, and an
// install lists its release's records once, not twice. Another writer could
// change the records between the two readings as well as after the second:
// Helm's create of the first record is what refuses a release made
// meanwhile, as before.
type lookups struct {
	driver.Driver
	mu   sync.Mutex
	kept map[string]lookup
}

type lookup struct {
	rels []*helmrelease.Release
	err  error
}

// historyOf reports the release name of a query for its history, as
// storage.History asks it.
func historyOf(labels map[string]string) (string, bool) {
	name, ok := labels["name"]
	return name, ok && len(labels) == 2 && labels["owner"] == "helm"
}

// Query answers the first history query of a kept release from what was
// kept, and every other query from storage.
func (l *lookups) Query(labels map[string]string) ([]*helmrelease.Release, error) {
	if name, ok := historyOf(labels); ok {
		l.mu.Lock()
		k, found := l.kept[name]
		delete(l.kept, name)
		l.mu.Unlock()
		if found {
			return slices.Clone(k.rels), k.err
		}
	}
	return l.Driver.Query(labels)
}

// history reads name's records and keeps them for the next history query.
// The caller holds the release's lock, and forgets them before it lets go.
func (l *lookups) history(name string) ([]*helmrelease.Release, error) {
	rels, err := l.Driver.Query(map[string]string{"name": name, "owner": "helm"})
	l.mu.Lock()
	if l.kept == nil {
		l.kept = map[string]lookup{}
	}
	l.kept[name] = lookup{rels: slices.Clone(rels), err: err}
	l.mu.Unlock()
	return rels, err
}

// forget drops what history kept of name, if Helm did not read it.
func (l *lookups) forget(name string) {
	l.mu.Lock()
	delete(l.kept, name)
	l.mu.Unlock()
}
