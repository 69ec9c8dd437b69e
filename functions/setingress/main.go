// Command setingress exposes Service ports at reserved ports of shared-IP entry
// points.
package main

import (
	"context"
	"log/slog"

	"k8s.io/client-go/kubernetes"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/berth-dev/berth/pkg/function"
)

func main() {
	var cfg Config
	function.Main("setingress", &cfg, func(context.Context, *slog.Logger) (function.Function, error) {
		rc, err := cfg.RESTConfig("setingress")
		if err != nil {
			return function.Function{}, err
		}
		core, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return function.Function{}, err
		}
		gw, err := gatewayclient.NewForConfig(rc)
		if err != nil {
			return function.Function{}, err
		}
		h := newHandler(cfg, core, gw)
		return function.Function{API: h.routes(), Events: h.event}, nil
	})
}
