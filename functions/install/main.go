// Command install is Helm as a service: it installs, upgrades, rolls back,
// uninstalls and shows releases through the Helm SDK, in-process.
package main

import (
	"context"
	"log/slog"

	"github.com/berth-dev/berth/pkg/function"
)

func main() {
	var cfg Config
	function.Main("install", &cfg, func(_ context.Context, log *slog.Logger) (function.Function, error) {
		c, err := cfg.Clients("install")
		if err != nil {
			return function.Function{}, err
		}
		guard := cfg.GuardSettings.New(c.Core)
		h := newHandler(cfg, c.REST, c.Core, c.Gateway, guard, log)
		fn := h.fn()
		fn.Gate = guard
		fn.Warm = c.Connect
		return fn, nil
	})
}
