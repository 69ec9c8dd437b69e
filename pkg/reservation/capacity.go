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
	// Reserved and Bound count the ledger's live entries in the range; InUse
	// the range's other ports the entry point serves outside the ledger.
	Reserved int `json:"reserved"`
	Bound    int `json:"bound"`
	InUse    int `json:"inUse"`
	// Free is what a reservation may still get: Range - Reserved - Bound -
	// InUse.
	Free  int `json:"free"`
	Range int `json:"range"`
}

// Capacities reads every entry point's ledger (the same reads List makes) and
// answers, per entry point and protocol, its ports reserved, bound, used
// otherwise and free. It names no owner and no Service.
func (s *Service) Capacities(ctx context.Context) ([]Capacity, error) {
	all, err := s.EntryPoints.List(ctx, true)
	if err != nil {
		return nil, err
	}
	now := s.now()
	size := s.Range.Max - s.Range.Min + 1
	out := []Capacity{}
	for _, ep := range all {
		l, err := s.Ledgers.Get(ctx, ref(ep))
		if err != nil {
			return nil, err
		}
		for _, proto := range []portalloc.Protocol{portalloc.TCP, portalloc.UDP} {
			c := Capacity{EntryPoint: ep.ID(), IP: ep.Address, Backend: ep.Backend, Protocol: proto, Range: size}
			for p := s.Range.Min; p <= s.Range.Max; p++ {
				k := portalloc.Key{Protocol: proto, Port: p}
				e, held := l.Entries[k]
				switch {
				case held && !e.Expired(now) && e.State == portalloc.Bound:
					c.Bound++
				case held && !e.Expired(now):
					c.Reserved++
				case ep.InUse(k):
					c.InUse++
				default:
					c.Free++
				}
			}
			out = append(out, c)
		}
	}
	return out, nil
}
