package expose

import "github.com/berth-dev/berth/pkg/problem"

var (
	// ErrBadRequest is an exposure request that is not well formed.
	ErrBadRequest = problem.New(problem.ErrInvalid, "invalid exposure request")
	// ErrServiceNotFound means the target Service does not exist.
	ErrServiceNotFound = problem.New(problem.ErrNotFound, "target Service not found")
	// ErrNoSuchPort means the target Service has no port of that number or name
	// and protocol.
	ErrNoSuchPort = problem.New(problem.ErrUnprocessable, "target Service has no such port")
	// ErrNoSelector means a shared-IP exposure was asked for a Service that
	// selects no pods.
	ErrNoSelector = problem.New(problem.ErrUnprocessable, "target Service has no selector")
	// ErrAmbiguous means a release created several Services that match.
	ErrAmbiguous = problem.New(problem.ErrUnprocessable, "more than one Service of the release matches")
	// ErrNoBackend means the entry point names a backend berth does not have.
	ErrNoBackend = problem.New(problem.ErrUnprocessable, "entry point has no usable routing backend")
	// ErrTaken means a routing object for the port exists and routes elsewhere.
	ErrTaken = problem.New(problem.ErrConflict, "the port is already routed elsewhere")
	// ErrRefused means the data plane refused the exposure (a listener not
	// accepted, an address not given); what berth wrote is taken back.
	ErrRefused = problem.New(problem.ErrUnprocessable, "the data plane refused the exposure")
	// ErrUnconfirmed means the data plane did not confirm the exposure within
	// the wait; it stays written, pending.
	ErrUnconfirmed = problem.New(problem.ErrUnprocessable, "the data plane did not confirm the exposure in time")
	// ErrGatewayFull means a Gateway that takes berth's listeners itself has
	// its 64 already.
	ErrGatewayFull = problem.New(problem.ErrUnprocessable, "the Gateway has no room for another listener")
	// ErrSetsNotAdmitted means the entry point's Gateway does not admit
	// ListenerSets, where berth puts its listeners.
	ErrSetsNotAdmitted = problem.New(problem.ErrUnprocessable, "the Gateway admits no ListenerSets")
	// ErrNoStreamConfigMap means the ingress-nginx controller does not read a
	// tcp/udp-services ConfigMap for the protocol.
	ErrNoStreamConfigMap = problem.New(problem.ErrUnprocessable, "ingress-nginx serves no ConfigMap for this protocol")
)
