package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// Config is getport's configuration, read from the environment.
type Config struct {
	function.Config
	kube.Settings
	// LoadBalancerNamespace holds the entry points and their ledgers. The seed's
	// variable LoadBalancerNamespace is read too.
	LoadBalancerNamespace string `split_words:"true"`
	// IngressLabel, when set, keeps only entry points labelled appingress=<value>.
	// The seed's variable IngressLabel is read too.
	IngressLabel string `split_words:"true"`
	// PortMin and PortMax bound the ports handed out, per protocol.
	PortMin int `split_words:"true" default:"20000"`
	PortMax int `split_words:"true" default:"30000"`
	// ReservationTTL is how long a port that is reserved and never bound is held.
	ReservationTTL time.Duration `envconfig:"RESERVATION_TTL" default:"10m"`
	// TCPServicesConfigMap and UDPServicesConfigMap are ingress-nginx's
	// ConfigMaps (name in LoadBalancerNamespace, or namespace/name). Where empty,
	// they are read from the controller pods' --tcp/udp-services-configmap flags.
	TCPServicesConfigMap string `envconfig:"TCP_SERVICES_CONFIGMAP"`
	UDPServicesConfigMap string `envconfig:"UDP_SERVICES_CONFIGMAP"`
}

// Default reads the seed's variable names where the new ones are not set.
func (c *Config) Default() {
	if v, ok := os.LookupEnv("LoadBalancerNamespace"); ok && c.LoadBalancerNamespace == "" {
		c.LoadBalancerNamespace = v
	}
	if v, ok := os.LookupEnv("IngressLabel"); ok && c.IngressLabel == "" {
		c.IngressLabel = v
	}
}

// Validate reports values that parse but cannot work.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate(), c.Settings.Validate()}
	if c.LoadBalancerNamespace == "" {
		errs = append(errs, errors.New("LOAD_BALANCER_NAMESPACE (or LoadBalancerNamespace) is required"))
	}
	if err := c.Range().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("PORT_MIN, PORT_MAX: %w", err))
	}
	if c.ReservationTTL <= 0 {
		errs = append(errs, fmt.Errorf("RESERVATION_TTL=%s: must be positive", c.ReservationTTL))
	}
	return errors.Join(errs...)
}

// Range is the configured port range.
func (c Config) Range() portalloc.Range { return portalloc.Range{Min: c.PortMin, Max: c.PortMax} }
