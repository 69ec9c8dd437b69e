// Command getport serves berth's port reservations on shared-IP entry points.
package main

import (
	"context"
	"log/slog"

	"github.com/berth-dev/berth/pkg/function"
)

func main() {
	var cfg Config
	function.Main("getport", &cfg, func(context.Context, *slog.Logger) (function.Function, error) {
		c, err := cfg.Clients("getport")
		if err != nil {
			return function.Function{}, err
		}
		guard := cfg.GuardSettings.New(c.Core)
		h := newHandler(cfg, c.Core, c.Gateway, guard)
		fn := h.fn()
		fn.Gate = guard
		fn.Warm = c.Connect
		return fn, nil
	})
}
