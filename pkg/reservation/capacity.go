package reservation

import (
	"context"

	"github.com/berth-dev/berth/pkg/portalloc"
)

// Capacity is how full one entry point is for one protocol: the capacity
// signal of a shared IP.
type Capacity struct {
	EntryPoint string             `json:"entryPoint"`
	IP         string             `json:"ip"`
	Backend    string             `json:"backend"`
	Protocol   portalloc.Protocol `json:"protocol"`
	portalloc.Usage
	// Range is how many ports the range holds: Reserved + Bound + InUse + Free.
	Range int `json:"range"`
}

// Capacities reads every entry point's ledger (the same reads List makes) and
// answers, per entry point and protocol, its ports reserved, bound, used
// otherwise and free. It names no owner and no Service.
func (s *Service) Capacities(ctx context.Context) ([]Capacity, error) {
	all, ledgers, err := s.snapshot(ctx, "", true)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := []Capacity{}
	for i, ep := range all {
		l := ledgers[i]
		for _, proto := range []portalloc.Protocol{portalloc.TCP, portalloc.UDP} {
			out = append(out, Capacity{EntryPoint: ep.ID(), IP: ep.Address, Backend: ep.Backend, Protocol: proto,
				Usage: l.Usage(proto, s.Range, ep.InUse, now), Range: s.Range.Max - s.Range.Min + 1})
		}
	}
	return out, nil
}
