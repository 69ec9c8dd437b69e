package expose

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// Labels and annotations berth sets on what it writes.
const (
	LabelEntryPoint      = "berth.dev/entry-point"
	LabelPort            = "berth.dev/port"
	AnnotationOwner      = "berth.dev/owner"
	AnnotationEndpoint   = "berth.dev/endpoint"
	LabelGateway         = "berth.dev/gateway"
	labelNamespaceName   = "kubernetes.io/metadata.name"
	maxGatewayListeners  = 64
	maxListenerSetListen = 64
)

// Proxy asks ingress-nginx for the PROXY protocol: Decode on the listening side,
// Encode towards the Service. TCP only.
type Proxy struct {
	Decode bool `json:"decode,omitempty"`
	Encode bool `json:"encode,omitempty"`
}

// Exposure is one port of an entry point routed to one Service port.
type Exposure struct {
	Key   portalloc.Key
	Owner string
	// IP is the entry point's address.
	IP string
	// Namespace and Service name the target Service.
	Namespace, Service string
	// Port is the target's Service port; TargetPort and Selector are the
	// target's, for backends that route to pods directly.
	Port       int32
	TargetPort intstr.IntOrString
	Selector   map[string]string
	Proxy      Proxy
}

// Backend writes and removes the routing objects of one kind of entry point.
// Both calls are idempotent: a retry finishes what a crash left half done.
// Expose answers ErrTaken, when the port is routed by something not berth's,
// before it writes anything: the Exposer then puts the ledger back.
//
// Expose returns the generation from which the data plane's answer about the
// exposure counts (a Gateway's, when berth wrote its listener; 0 where there
// is none). Status reads what the data plane reports of x (never what berth
// wrote), counting answers from generation since (0: any); an error is only
// for a read that failed.
type Backend interface {
	Expose(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) (since int64, err error)
	Unexpose(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) error
	Status(ctx context.Context, ep entrypoint.EntryPoint, x Exposure, since int64) (Status, error)
}

// An Admitter is a Backend that can refuse a target Service it cannot route,
// before any port is reserved for it.
type Admitter interface {
	Admit(svc *corev1.Service) error
}

// portName is the name berth gives a port or listener: "tcp-20001".
func portName(k portalloc.Key) string { return k.String()[:3] + "-" + k.String()[4:] }

// objectName is a DNS label naming berth's object for k on ep, shortened with a
// hash when too long.
func objectName(ep entrypoint.EntryPoint, k portalloc.Key) string {
	n := "berth-" + ep.Name + "-" + portName(k)
	if len(n) <= 63 {
		return n
	}
	return "berth-" + strings.TrimRight(ep.Name[:40], "-") + "-" + shortHash(ep.ID()) + "-" + portName(k)
}
