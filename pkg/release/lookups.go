package release

import (
	"slices"
	"sync"

	"helm.sh/helm/v3/pkg/action"
	helmrelease "helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
)

// forOperation returns a copy of a namespace's configuration for one
// operation. Helm writes on the configuration it is given (its storage's
// MaxHistory, the cluster's capabilities, worked out once and kept); shared
// by concurrent operations, those writes raced. The copy's storage is seen,
// which answers Helm's first reading of a release's history from berth's own
// (lookups).
func forOperation(shared *action.Configuration) (cfg *action.Configuration, seen *lookups) {
	c := *shared
	st := *shared.Releases
	seen = &lookups{Driver: shared.Releases.Driver}
	st.Driver = seen
	c.Releases = &st
	return &c, seen
}

// lookups is one operation's release storage. It answers Helm's first
// reading of the release's history (install's name check,
// Install.availableName, and upgrade's last revision) from the reading berth
// made just before to decide what to do: an install lists its release's
// records once, not twice. Another writer could change the records between
// the two readings as well as after the second: Helm's create of the first
// record is what refuses a release made meanwhile, as before.
type lookups struct {
	driver.Driver
	mu   sync.Mutex
	name string
	kept *lookup
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

// Query answers the first history query of the kept release from what was
// kept, and every other query from storage.
func (l *lookups) Query(labels map[string]string) ([]*helmrelease.Release, error) {
	if name, ok := historyOf(labels); ok {
		l.mu.Lock()
		k := l.kept
		if name != l.name {
			k = nil
		}
		if k != nil {
			l.kept = nil
		}
		l.mu.Unlock()
		if k != nil {
			return slices.Clone(k.rels), k.err
		}
	}
	return l.Driver.Query(labels)
}

// history reads name's records and keeps them for the next history query.
func (l *lookups) history(name string) ([]*helmrelease.Release, error) {
	rels, err := l.Driver.Query(map[string]string{"name": name, "owner": "helm"})
	l.mu.Lock()
	l.name, l.kept = name, &lookup{rels: slices.Clone(rels), err: err}
	l.mu.Unlock()
	return rels, err
}

// forget drops what history kept: what follows reads storage.
func (l *lookups) forget() {
	l.mu.Lock()
	l.kept = nil
	l.mu.Unlock()
}
