package expose

import (
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/gatewayapi"

	"github.com/berth-dev/berth/pkg/entrypoint"
)

// Deps are what the routing backends are built from.
type Deps struct {
	Core kubernetes.Interface
	// Gateway is nil where the Gateway API is not served; the backends that
	// need it are then left out.
	Gateway *gatewayapi.Client
	// SharedIPAnnotations are set on every shared-IP Service ("{ip}" in a value
	// becomes the entry point's address).
	SharedIPAnnotations map[string]string
	Backoff             wait.Backoff
}

// backendKinds are the routing backends, by the name an entry point's
// berth.dev/backend annotation (or its kind) gives: the one place a backend is
// registered. A constructor answers nil when deps cannot serve it.
var backendKinds = map[string]func(Deps) Backend{
	entrypoint.BackendGatewayAPI: func(d Deps) Backend {
		if d.Gateway == nil {
			return nil
		}
		return &GatewayBackend{Client: d.Gateway, Backoff: d.Backoff}
	},
	entrypoint.BackendIngressNginx: func(d Deps) Backend {
		return &IngressNginxBackend{Core: d.Core, Backoff: d.Backoff}
	},
	entrypoint.BackendSharedIP: func(d Deps) Backend {
		return &SharedIPBackend{Core: d.Core, Annotations: d.SharedIPAnnotations, Backoff: d.Backoff}
	},
}

// NewBackends builds every registered backend that d can serve.
func NewBackends(d Deps) map[string]Backend {
	out := map[string]Backend{}
	for name, build := range backendKinds {
		if b := build(d); b != nil {
			out[name] = b
		}
	}
	return out
}
