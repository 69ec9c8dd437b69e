package main

import (
	"errors"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/reservation"
)

// Config is getport's configuration, read from the environment.
type Config struct {
	function.Config
	kube.ClientSettings
	auth.GuardSettings
	reservation.Settings
}

// Validate reports values that parse but cannot work.
func (c Config) Validate() error {
	return errors.Join(c.Config.Validate(), c.ClientSettings.Validate(), c.GuardSettings.Validate(), c.Settings.Validate())
}
