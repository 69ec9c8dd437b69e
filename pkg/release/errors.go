package release

import "github.com/berth-dev/berth/pkg/problem"

var (
	// ErrBadRequest is a request that is not well formed.
	ErrBadRequest = problem.New(problem.ErrInvalid, "invalid release request")
	// ErrNamespaceNotAllowed is a namespace outside ALLOWED_NAMESPACES.
	ErrNamespaceNotAllowed = problem.New(problem.ErrForbidden, "namespace is not allowed")
	// ErrSourceNotAllowed is a chart source outside ALLOWED_CHART_SOURCES, or
	// one that resolves to a loopback, link-local or metadata address.
	ErrSourceNotAllowed = problem.New(problem.ErrForbidden, "chart source is not allowed")
	// ErrCredentialsSource is a credentials Secret named for a source it is not for.
	ErrCredentialsSource = problem.New(problem.ErrForbidden, "the credentials Secret is for another chart source")
	// ErrChartNotFound means the repository or registry has no such chart or version.
	ErrChartNotFound = problem.New(problem.ErrUnprocessable, "chart not found")
	// ErrNotInstallable is a library chart, or an archive that is not a chart.
	ErrNotInstallable = problem.New(problem.ErrUnprocessable, "chart is not installable")
	// ErrRefused is a chart that needs what the API server refuses its
	// namespace's deployer: RBAC it lacks (a ClusterRole, another namespace), or
	// a pod Pod Security does not admit.
	ErrRefused = problem.New(problem.ErrForbidden, "the API server refused what the chart needs in this namespace")
	// ErrRender is a chart that does not render or apply with these values.
	ErrRender = problem.New(problem.ErrUnprocessable, "chart cannot be installed with these values")
	// ErrSourceUnavailable is a repository or registry that did not answer.
	ErrSourceUnavailable = problem.New(problem.ErrUnavailable, "chart source unavailable")
	// ErrExists is a release that exists with another chart, version or values.
	ErrExists = problem.New(problem.ErrConflict, "release exists with another chart, version or values; ask for an upgrade")
	// ErrInProgress is a release with an operation still pending within its timeout.
	ErrInProgress = problem.New(problem.ErrConflict, "another operation on this release is in progress")
	// ErrNotFound is a release that does not exist.
	ErrNotFound = problem.New(problem.ErrNotFound, "release not found")
)
