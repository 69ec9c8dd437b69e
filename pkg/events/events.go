// Package events is the contract between berth's functions: the CloudEvent types
// they consume and reply with, and the JSON data each carries. Types are named
// dev.berth.<noun>.<verb-past>.
package events

import (
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The event types.
const (
	InstallRequested   = "dev.berth.install.requested"
	ReleaseInstalled   = "dev.berth.release.installed"
	InstallFailed      = "dev.berth.install.failed"
	ReleaseUninstalled = "dev.berth.release.uninstalled"
	UninstallRequested = "dev.berth.uninstall.requested"
	PortRequested      = "dev.berth.port.requested"
	PortReserved       = "dev.berth.port.reserved"
	PortFailed         = "dev.berth.port.failed"
	EndpointExposed    = "dev.berth.endpoint.exposed"
	EndpointFailed     = "dev.berth.endpoint.failed"
	// SweepRequested asks getport for a leak-repair sweep. A Knative PingSource's
	// own type, dev.knative.sources.ping, is taken as the same.
	SweepRequested = "dev.berth.sweep.requested"
	PingSourcePing = "dev.knative.sources.ping"
)

// The CloudEvent extensions berth sets and reads.
const (
	// ExtensionExpose is set to "true" on a release.installed event whose release
	// asks to be exposed, so that a Trigger can filter on it.
	ExtensionExpose = "berthexpose"
	// ExtensionCause is the id of the event a reply answers.
	ExtensionCause = "berthcause"
	// ExtensionCorrelation is copied from a request to every reply down the
	// chain, so that a caller can follow its request.
	ExtensionCorrelation = "berthcorrelation"
	// ExtensionTenant names the namespace an event acts in. The Broker's
	// EventPolicies let a tenant's ServiceAccounts send events only with their own
	// namespace here; the functions refuse an event whose data names another.
	ExtensionTenant = "berthtenant"
)

// Expose says which Service port of a release to make reachable on a shared IP.
type Expose struct {
	// ServiceName is the Service to expose; it may be left out when the release
	// created one Service with a matching port.
	ServiceName string `json:"serviceName,omitempty"`
	// ServicePort is the Service's port, by number or name.
	ServicePort intstr.IntOrString `json:"servicePort"`
	// Protocol is TCP (the default) or UDP.
	Protocol string `json:"protocol,omitempty"`
	// LBIP picks the entry point with that address.
	LBIP string `json:"lbip,omitempty"`
}

// ServicePort is one port of a Service a release created.
type ServicePort struct {
	Name     string `json:"name,omitempty"`
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"`
}

// Service is a Service a release created.
type Service struct {
	Name  string        `json:"name"`
	Ports []ServicePort `json:"ports"`
}

// Release is a Helm release, as events carry it.
type Release struct {
	Name      string    `json:"name"`
	Namespace string    `json:"namespace"`
	Revision  int       `json:"revision,omitempty"`
	Status    string    `json:"status,omitempty"`
	Chart     string    `json:"chart,omitempty"`
	Version   string    `json:"version,omitempty"`
	Services  []Service `json:"services,omitempty"`
}

// Owner is the release's idempotency key for ports: namespace/name.
func (r Release) Owner() string { return r.Namespace + "/" + r.Name }

// ReleaseInstalledData is the data of dev.berth.release.installed.
type ReleaseInstalledData struct {
	Release Release `json:"release"`
	Expose  *Expose `json:"expose,omitempty"`
}

// PortRequestedData is the data of dev.berth.port.requested.
type PortRequestedData struct {
	// Owner is the idempotency key; without it, one is derived from the event's
	// source and id, so a redelivery gets the same port.
	Owner      string `json:"owner,omitempty"`
	Protocol   string `json:"protocol,omitempty"`
	LBIP       string `json:"lbip,omitempty"`
	EntryPoint string `json:"entryPoint,omitempty"`
	// Expose and Release travel on to setingress.
	Expose  *Expose  `json:"expose,omitempty"`
	Release *Release `json:"release,omitempty"`
}

// PortReservedData is the data of dev.berth.port.reserved.
type PortReservedData struct {
	EntryPoint string `json:"entryPoint"`
	IP         string `json:"ip"`
	Port       int    `json:"port"`
	Protocol   string `json:"protocol"`
	Owner      string `json:"owner"`
	// Expose and Release say what setingress should route the port to.
	Expose  *Expose  `json:"expose,omitempty"`
	Release *Release `json:"release,omitempty"`
}

// ReleaseUninstalledData is the data of dev.berth.release.uninstalled.
type ReleaseUninstalledData struct {
	Release Release `json:"release"`
}

// EndpointExposedData is the data of dev.berth.endpoint.exposed.
type EndpointExposedData struct {
	IP         string `json:"ip"`
	Port       int    `json:"port"`
	Protocol   string `json:"protocol"`
	EntryPoint string `json:"entryPoint"`
	Backend    string `json:"backend"`
	Owner      string `json:"owner"`
	// Service is namespace/name of the Service the port routes to.
	Service string   `json:"service"`
	Release *Release `json:"release,omitempty"`
}
