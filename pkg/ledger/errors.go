package ledger

import "github.com/berth-dev/berth/pkg/problem"

var (
	// ErrContended means the ledger still conflicted after the bounded retries.
	ErrContended = problem.New(problem.ErrConflict, "ledger still conflicting after retries")
	// ErrTooBig means the API server refused the ledger ConfigMap for its size.
	ErrTooBig = problem.New(problem.ErrUnprocessable, "ledger is full: its ConfigMap would pass 1 MiB")
)
