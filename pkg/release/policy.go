package release

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
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
	// AllowPrivateAddresses lets chart sources resolve to loopback, link-local,
	// cloud metadata, private (RFC 1918, ULA) and CGNAT addresses. Off by default.
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
	u, err := ParseSource(raw)
	if err != nil {
		return err
	}
	return p.allows(u)
}

// allows checks a parsed source against the allowlist.
func (p Policy) allows(u *url.URL) error {
	for _, prefix := range p.Sources {
		if pu, err := ParseSource(prefix); err == nil && Within(u, pu) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrSourceNotAllowed, u.Redacted())
}

// ParseSource reads a chart source URL (or an allowlist entry): https, http or
// oci, with a host, without credentials, query or fragment.
func ParseSource(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: %q is not a URL", ErrBadRequest, problem.Clip(raw))
	}
	if _, ok := sourceKinds[u.Scheme]; !ok {
		return nil, fmt.Errorf("%w: scheme %q (want %s)", ErrBadRequest, problem.Clip(u.Scheme), schemes())
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: credentials belong in a Secret, not in the URL", ErrBadRequest)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("%w: a chart source has no query or fragment", ErrBadRequest)
	}
	// The path is compared as sent: no escapes that decode to something else
	// (%2e%2e, %2f), and no dot segments, which a server may or may not resolve.
	if u.RawPath != "" || strings.Contains(u.Path, "%") {
		return nil, fmt.Errorf("%w: a chart source's path has no escaped characters", ErrBadRequest)
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return nil, fmt.Errorf("%w: a chart source's path has no . or .. segments", ErrBadRequest)
		}
	}
	if _, err := strconv.Atoi(portOf(u)); err != nil {
		return nil, fmt.Errorf("%w: port of %q", ErrBadRequest, problem.Clip(raw))
	}
	return u, nil
}

// schemes lists the chart source schemes, for messages.
func schemes() string {
	return strings.Join(slices.Sorted(maps.Keys(sourceKinds)), ", ")
}

// Within reports whether source u lies within prefix: the same scheme, host
// and port exactly, and u's path is prefix's path or below it, on a segment
// boundary. So https://charts.example.com admits https://charts.example.com/team
// and not https://charts.example.com.evil.io or https://charts.example.com@evil.io;
// oci://ghcr.io/acme admits oci://ghcr.io/acme/gw and not oci://ghcr.io/acme-evil.
func Within(u, prefix *url.URL) bool {
	if u.Scheme != prefix.Scheme || !strings.EqualFold(u.Hostname(), prefix.Hostname()) || portOf(u) != portOf(prefix) {
		return false
	}
	base := strings.TrimSuffix(path.Clean("/"+prefix.Path), "/")
	p := path.Clean("/" + u.Path)
	return base == "" || p == base || strings.HasPrefix(p, base+"/")
}

// portOf is u's port, or its scheme's default.
func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "http" {
		return "80"
	}
	return "443"
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

// privateRanges are ranges inside a cluster or a provider's network that a chart
// source may not reach: CGNAT (RFC 6598), besides what net.IP knows as private
// (RFC 1918, where clusters' Pod and Service CIDRs usually are, and ULA).
var privateRanges = []*net.IPNet{mustCIDR("100.64.0.0/10")}

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// forbiddenAddress reports addresses a chart source may not resolve to:
// loopback, link-local, metadata, private (RFC 1918, ULA), CGNAT, unspecified
// and multicast.
func forbiddenAddress(ip net.IP) bool {
	if ip == nil {
		return true
	}
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsPrivate() {
		return true
	}
	if slices.ContainsFunc(privateRanges, func(n *net.IPNet) bool { return n.Contains(ip) }) {
		return true
	}
	return slices.ContainsFunc(metadataAddresses, ip.Equal)
}
