package telemetry

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"
)

// berth's attributes, on spans and metrics. Semantic conventions' own
// (error.type, network.transport, cloudevents.*, http.*) are used where
// they fit.
const (
	// AttrOutcome is success or failure.
	AttrOutcome = attribute.Key("berth.outcome")
	// AttrOperation is a Helm operation: install, upgrade, uninstall, rollback.
	AttrOperation = attribute.Key("berth.operation")
	// AttrRelease is a release, namespace/name.
	AttrRelease = attribute.Key("berth.release")
	// AttrChart is a chart's name and version.
	AttrChart = attribute.Key("berth.chart")
	// AttrEntryPoint is an entry point's id.
	AttrEntryPoint = attribute.Key("berth.entry_point")
	// AttrBackend is a routing backend: gateway-api, ingress-nginx, shared-ip.
	AttrBackend = attribute.Key("berth.backend")
	// AttrPort is a public port.
	AttrPort = attribute.Key("berth.port")
	// AttrPortState is how a port is used: reserved, bound, in_use, free.
	AttrPortState = attribute.Key("berth.port.state")
	// AttrExposureState is what the data plane reports of an exposure:
	// exposed, pending, failed.
	AttrExposureState = attribute.Key("berth.exposure.state")
	// AttrOwner is a port's owner.
	AttrOwner = attribute.Key("berth.owner")
	// AttrService is a target Service, namespace/name.
	AttrService = attribute.Key("berth.service")
	// AttrLedger is a ledger ConfigMap, namespace/name.
	AttrLedger = attribute.Key("berth.ledger")
	// AttrBatchSize is how many updates one ledger write committed.
	AttrBatchSize = attribute.Key("berth.ledger.batch_size")
	// AttrAttempts is how many times a compare-and-swap was tried.
	AttrAttempts = attribute.Key("berth.ledger.attempts")
	// AttrTransport is network.transport: tcp or udp.
	AttrTransport = attribute.Key("network.transport")
)

// Transport is network.transport for a protocol ("TCP" is tcp).
func Transport[P ~string](proto P) attribute.KeyValue {
	return AttrTransport.String(strings.ToLower(string(proto)))
}
