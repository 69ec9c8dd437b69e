package reservation

import "github.com/berth-dev/berth/pkg/problem"

var (
	// ErrNoEntryPoint means no entry point with an address exists yet.
	ErrNoEntryPoint = problem.New(problem.ErrUnavailable, "no shared-IP entry point with an address")
	// ErrUnknownAddress means no entry point has the address asked for (lbip).
	ErrUnknownAddress = problem.New(problem.ErrNotFound, "no entry point has that address")
	// ErrUnknownEntryPoint means no entry point has the id asked for.
	ErrUnknownEntryPoint = problem.New(problem.ErrNotFound, "no such entry point")
)
