package reservation

import (
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/gatewayapi"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// Settings configure entry points and ledgers. getport and setingress embed
// them in their configuration, so both read the same environment.
type Settings struct {
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
	// MaxPortsPerNamespace bounds the ports one namespace's owners hold, over
	// every entry point and both protocols (403 past it); 0 is no bound.
	MaxPortsPerNamespace int `split_words:"true" default:"100"`
}

// Default reads the seed's variable names where the new ones are not set.
func (s *Settings) Default() {
	if v, ok := os.LookupEnv("LoadBalancerNamespace"); ok && s.LoadBalancerNamespace == "" {
		s.LoadBalancerNamespace = v
	}
	if v, ok := os.LookupEnv("IngressLabel"); ok && s.IngressLabel == "" {
		s.IngressLabel = v
	}
}

// Validate reports values that parse but cannot work.
func (s Settings) Validate() error {
	var errs []error
	if s.LoadBalancerNamespace == "" {
		errs = append(errs, errors.New("LOAD_BALANCER_NAMESPACE (or LoadBalancerNamespace) is required"))
	}
	if err := s.Range().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("PORT_MIN, PORT_MAX: %w", err))
	}
	if s.MaxPortsPerNamespace < 0 {
		errs = append(errs, fmt.Errorf("MAX_PORTS_PER_NAMESPACE=%d: must not be negative", s.MaxPortsPerNamespace))
	}
	if s.ReservationTTL <= 0 {
		errs = append(errs, fmt.Errorf("RESERVATION_TTL=%s: must be positive", s.ReservationTTL))
	}
	return errors.Join(errs...)
}

// Range is the configured port range.
func (s Settings) Range() portalloc.Range { return portalloc.Range{Min: s.PortMin, Max: s.PortMax} }

// EntryPointsMaxAge is how old a listing of the entry points may be when a
// request need not read them consistently. The ledger, written by
// compare-and-swap, decides which port is free; the listing only names the
// entry points and the ports they serve outside it.
const EntryPointsMaxAge = time.Second

// New builds the reservation service these settings describe, reporting its
// ports' usage when metrics are exported. gw reads the Gateway API
// (entrypoint.Finder); nil where it is not used.
func (s Settings) New(core kubernetes.Interface, gw *gatewayapi.Client) *Service {
	finder := &entrypoint.Finder{
		Core: core, Gateway: gw, Namespace: s.LoadBalancerNamespace, Label: s.IngressLabel,
		TCPServices: s.TCPServicesConfigMap, UDPServices: s.UDPServicesConfigMap,
		MaxAge: EntryPointsMaxAge,
	}
	svc := &Service{
		EntryPoints: finder,
		Ledgers:     ledger.NewBooks(core.CoreV1(), kube.ConflictBackoff),
		Namespace:   s.LoadBalancerNamespace,
		Services:    KubeServices{Client: core},
		Range:       s.Range(),
		TTL:         s.ReservationTTL,

		MaxPerNamespace: s.MaxPortsPerNamespace,
	}
	// Instruments cannot fail to register on a working meter provider; a
	// broken one costs the capacity metric, never a reservation.
	_ = svc.ObservePorts()
	return svc
}
