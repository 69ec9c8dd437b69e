package release

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/berth-dev/berth/pkg/problem"
)

// Policy is what a request may ask for.
type Policy struct {
	// Namespaces are the namespaces releases may live in (exact names).
	Namespaces []string
	// Sources are URL prefixes charts may come from (https://..., oci://...).
	Sources []string
	// AllowPrivateAddresses lets chart sources resolve to loopback, link-local
	// and cloud metadata addresses. Off by default.
	AllowPrivateAddresses bool
	// MaxValuesBytes bounds the JSON size of a request's values.
	MaxValuesBytes int
	// AllowCreateNamespace lets requests ask for their namespace to be created
	// (which also takes RBAC on namespaces). Off by default.
	AllowCreateNamespace bool
}

// CheckNamespace refuses a namespace outside the allowlist.
func (p Policy) CheckNamespace(ns string) error {
	if len(validation.IsDNS1123Label(ns)) > 0 {
		return fmt.Errorf("%w: namespace %q is not a DNS label", ErrBadRequest, problem.Clip(ns))
	}
	if !slices.Contains(p.Namespaces, ns) {
		return fmt.Errorf("%w: %q", ErrNamespaceNotAllowed, ns)
	}
	return nil
}

// CheckSource refuses a chart source URL outside the allowlist, one that is
// not http(s) or oci, or one carrying credentials.
func (p Policy) CheckSource(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: %q is not a URL", ErrBadRequest, problem.Clip(raw))
	}
	switch u.Scheme {
	case "https", "http", "oci":
	default:
		return fmt.Errorf("%w: scheme %q (want https, http or oci)", ErrBadRequest, u.Scheme)
	}
	if u.User != nil {
		return fmt.Errorf("%w: credentials belong in a Secret, not in the URL", ErrBadRequest)
	}
	// A repository's base URL has no trailing slash; the prefix
	// "https://charts.example.com/" allows "https://charts.example.com" itself.
	for _, prefix := range p.Sources {
		if strings.HasPrefix(raw+"/", prefix) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrSourceNotAllowed, u.Redacted())
}

// CheckReleaseName refuses a name Helm could not use: a DNS label of at most 53
// characters.
func CheckReleaseName(name string) error {
	if name == "" || len(name) > 53 || len(validation.IsDNS1123Label(name)) > 0 {
		return fmt.Errorf("%w: releaseName must be a DNS label of at most 53 characters", ErrBadRequest)
	}
	return nil
}

// metadataAddresses are cloud instance-metadata endpoints outside link-local.
var metadataAddresses = []net.IP{
	net.ParseIP("fd00:ec2::254"),   // AWS IPv6
	net.ParseIP("100.100.100.200"), // Alibaba Cloud
}

// forbiddenAddress reports addresses a chart source may not resolve to.
func forbiddenAddress(ip net.IP) bool {
	if ip == nil {
		return true
	}
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() {
		return true
	}
	return slices.ContainsFunc(metadataAddresses, ip.Equal)
}
