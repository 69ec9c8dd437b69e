package kube

import (
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
)

// What berth marks the objects it creates with (ledgers, routes, Services).
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "berth"
)

// ConflictBackoff bounds the retries of a compare-and-swap write that lost to
// another writer: 25 attempts, jittered and growing from 2 ms to about 1 s, 5 to
// 10 s in all. (No Cap: wait.Backoff stops retrying once its Cap is reached.)
var ConflictBackoff = wait.Backoff{Duration: 2 * time.Millisecond, Factor: 1.3, Jitter: 1.0, Steps: 25}

// LostRace reports a write lost to another writer, which a fresh read and a
// retry may win: a stale resourceVersion, or a create that another writer won.
func LostRace(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
