package entrypoint

import "github.com/berth-dev/berth/pkg/problem"

// ErrBadID is an entry point id that is not "<kind>.<name>".
var ErrBadID = problem.New(problem.ErrInvalid, `entry point id must be "service.<name>" or "gateway.<name>"`)
