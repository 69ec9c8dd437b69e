package main

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/reservation"
)

// Config is setingress's configuration, read from the environment.
type Config struct {
	function.Config
	kube.ClientSettings
	reservation.Settings
	// SharedIPAnnotations are set on every shared-IP LoadBalancer Service, as
	// key:value pairs separated by commas; "{ip}" in a value becomes the entry
	// point's address. The default suits MetalLB.
	SharedIPAnnotations map[string]string `envconfig:"SHARED_IP_ANNOTATIONS" default:"metallb.io/allow-shared-ip:berth,metallb.io/loadBalancerIPs:{ip}"`
	// DefaultServiceNamespace is the target namespace of seed-style requests
	// that name none.
	DefaultServiceNamespace string `split_words:"true" default:"default"`
}

// Validate reports values that parse but cannot work.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate(), c.ClientSettings.Validate(), c.Settings.Validate()}
	for k := range c.SharedIPAnnotations {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("SHARED_IP_ANNOTATIONS: %q is not an annotation key", k))
		}
	}
	if len(validation.IsDNS1123Label(c.DefaultServiceNamespace)) > 0 {
		errs = append(errs, fmt.Errorf("DEFAULT_SERVICE_NAMESPACE=%q: not a namespace name", c.DefaultServiceNamespace))
	}
	return errors.Join(errs...)
}
