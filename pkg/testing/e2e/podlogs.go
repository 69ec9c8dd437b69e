//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// keepPodLogs copies, every second until ctx ends, the logs kubelet writes for
// the containers of pods in namespaces (in from, the node's pod log folder) to
// to/<namespace>/<pod>.<container>.log: scale-to-zero pods take their logs with
// them when they go.
func keepPodLogs(ctx context.Context, from, to string, namespaces ...string) {
	copyAll := func() {
		dirs, _ := os.ReadDir(from)
		for _, d := range dirs {
			parts := strings.SplitN(d.Name(), "_", 3) // <namespace>_<pod>_<uid>
			if len(parts) != 3 || !slices.Contains(namespaces, parts[0]) {
				continue
			}
			logs, _ := filepath.Glob(filepath.Join(from, d.Name(), "*", "*.log"))
			for _, l := range logs {
				b, err := os.ReadFile(l)
				if err != nil || len(b) == 0 {
					continue
				}
				container := filepath.Base(filepath.Dir(l))
				dst := filepath.Join(to, parts[0], parts[1]+"."+container+"."+strings.TrimSuffix(filepath.Base(l), ".log")+".log")
				_ = os.MkdirAll(filepath.Dir(dst), 0o755)
				_ = os.WriteFile(dst, b, 0o644)
			}
		}
	}
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				copyAll()
				return
			case <-t.C:
				copyAll()
			}
		}
	}()
}
