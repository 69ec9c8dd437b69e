package cluster

import (
	"context"
	"time"

	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

// Apply server-side applies every object of manifest to the cluster, retrying
// those refused while their CRD or admission webhook is still coming up.
func (c *Cluster) Apply(ctx context.Context, manifest []byte, timeout time.Duration) error {
	return controlplane.Apply(ctx, c.Config, manifest, timeout)
}
