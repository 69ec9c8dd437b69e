package main

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/reservation"
)

// Config is setingress's configuration, read from the environment.
type Config struct {
	function.Config
	kube.ClientSettings
	auth.GuardSettings
	reservation.Settings
	// SharedIPAnnotations are set on every shared-IP LoadBalancer Service, as
	// key:value pairs separated by commas; "{ip}" in a value becomes the entry
	// point's address. The default suits MetalLB.
	SharedIPAnnotations map[string]string `envconfig:"SHARED_IP_ANNOTATIONS" default:"metallb.io/allow-shared-ip:berth,metallb.io/loadBalancerIPs:{ip}"`
	// AllowedNamespaces are the namespaces whose Services may be exposed, comma
	// separated: install's ALLOWED_NAMESPACES, read from the same setting.
	AllowedNamespaces []string `split_words:"true" required:"true"`
	// ConfirmTimeout bounds how long an exposure waits for the data plane to
	// confirm or refuse it (a Gateway listener programmed, a load balancer's
	// address given): an event's, a 2018 setrule's, and the longest ?wait= of
	// POST /exposures. An event still pending then is answered
	// endpoint.failed.
	ConfirmTimeout time.Duration `split_words:"true" default:"30s"`
	// RemovedDefaultServiceNamespace is a setting that is gone: a request that
	// names no namespace is for the one install chooses (ALLOWED_NAMESPACES).
	// Set, it is refused, rather than exposing in another namespace than it
	// says.
	RemovedDefaultServiceNamespace string `envconfig:"DEFAULT_SERVICE_NAMESPACE"`
}

// Validate reports values that parse but cannot work.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate(), c.ClientSettings.Validate(), c.GuardSettings.Validate(), c.Settings.Validate()}
	for k := range c.SharedIPAnnotations {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("SHARED_IP_ANNOTATIONS: %q is not an annotation key", k))
		}
	}
	for _, ns := range c.AllowedNamespaces {
		if len(validation.IsDNS1123Label(ns)) > 0 {
			errs = append(errs, fmt.Errorf("ALLOWED_NAMESPACES: %q is not a namespace name", ns))
		}
	}
	if c.RemovedDefaultServiceNamespace != "" {
		errs = append(errs, errors.New("DEFAULT_SERVICE_NAMESPACE is gone: a request that names no namespace is for the caller's own if it is in ALLOWED_NAMESPACES, else the first of them (as install chooses); unset it"))
	}
	if c.ConfirmTimeout < 0 || c.ConfirmTimeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("CONFIRM_TIMEOUT %s is not within 0 and 10m", c.ConfirmTimeout))
	}
	if len(c.AllowedNamespaces) == 0 {
		errs = append(errs, errors.New("ALLOWED_NAMESPACES must name at least one namespace"))
	}
	return errors.Join(errs...)
}
