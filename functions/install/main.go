// Command install is Helm as a service: it installs, upgrades, rolls back,
// uninstalls and shows releases through the Helm SDK, in-process.
package main

import (
	"context"
	"log/slog"

	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/function"
)

func main() {
	var cfg Config
	function.Main("install", &cfg, func(_ context.Context, log *slog.Logger) (function.Function, error) {
		rc, err := cfg.RESTConfig("install")
		if err != nil {
			return function.Function{}, err
		}
		core, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return function.Function{}, err
		}
		h := newHandler(cfg, rc, core, log)
		return function.Function{API: h.routes(), Events: h.event}, nil
	})
}
