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
	// AllowedNamespaces are the namespaces apps live in (install's
	// ALLOWED_NAMESPACES, read from the same setting): a GET /getport that
	// names no namespace reserves in the caller's own if it is one of them,
	// else in the first, as install and setingress choose. Empty: the
	// caller's own.
	AllowedNamespaces []string `split_words:"true"`
}

// Validate reports values that parse but cannot work.
func (c Config) Validate() error {
	return errors.Join(c.Config.Validate(), c.ClientSettings.Validate(), c.GuardSettings.Validate(), c.Settings.Validate())
}
