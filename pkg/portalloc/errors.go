package portalloc

import "github.com/berth-dev/berth/pkg/problem"

var (
	// ErrFull means no port of the range is free for the protocol.
	ErrFull = problem.New(problem.ErrUnprocessable, "port range is full")
	// ErrHeld means the port is recorded for another owner.
	ErrHeld = problem.New(problem.ErrConflict, "port is held by another owner")
	// ErrRebind means a bound port was asked to route to another Service.
	ErrRebind = problem.New(problem.ErrConflict, "port is bound to another Service; unexpose it first")
	// ErrNotReserved means a bind named a port that has no reservation.
	ErrNotReserved = problem.New(problem.ErrNotFound, "port is not reserved")
	// ErrBadProtocol is a protocol other than TCP or UDP.
	ErrBadProtocol = problem.New(problem.ErrInvalid, "protocol must be TCP or UDP")
	// ErrBadOwner is an empty, overlong or unprintable owner key.
	ErrBadOwner = problem.New(problem.ErrInvalid, "owner must be 1-136 printable characters")
	// ErrOwnerNamespace is an owner key that does not name its namespace.
	ErrOwnerNamespace = problem.New(problem.ErrInvalid, "owner must be <namespace>/<name>, the name 1-72 letters, digits, '-', '.', '_' or ':'")
	// ErrQuota is a namespace that holds as many ports as it may.
	ErrQuota = problem.New(problem.ErrForbidden, "the namespace holds as many ports as its quota allows")
	// ErrNotInRange is a port outside 1-65535 or outside the configured range.
	ErrNotInRange = problem.New(problem.ErrInvalid, "port is not in range")
	// ErrCorrupt is a ledger entry that cannot be read; berth never overwrites it.
	ErrCorrupt = problem.New(problem.ErrUnprocessable, "ledger entry is corrupt")
)
