package portalloc

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"
)

// Claim is which port an owner holds for one protocol: the owner's side of a
// ledger split over several ConfigMaps. The ports' side (Entries) decides
// which port is free; the claims decide that an owner holds one port, not two.
type Claim struct {
	Owner string `json:"o"`
	Port  int    `json:"p"`
	// Since is when the claim was made, for the sweep's grace period.
	Since int64 `json:"t"`
	// Expires is when the reservation lapses, as its entry's; 0 once bound.
	Expires int64 `json:"x,omitempty"`
}

// Lapsed reports whether c is a claim on a reservation that has lapsed at now.
func (c Claim) Lapsed(now time.Time) bool { return c.Expires != 0 && now.Unix() >= c.Expires }

// Claims are the claims of the owners of some namespaces, on one entry point.
type Claims struct {
	// ByKey is keyed by ClaimKey.
	ByKey map[string]Claim
}

// NewClaims returns no claims.
func NewClaims() *Claims { return &Claims{ByKey: map[string]Claim{}} }

// Clone returns a deep copy.
func (c *Claims) Clone() *Claims { return &Claims{ByKey: maps.Clone(c.ByKey)} }

// ClaimKey is the ConfigMap data key of owner's claim for proto:
// "tcp.<32 hex digits of the owner's SHA-256>". An owner may hold characters a
// data key may not, and is bounded at 136 bytes; the key is neither.
func ClaimKey(owner string, proto Protocol) string {
	sum := sha256.Sum256([]byte(owner))
	return strings.ToLower(string(proto)) + "." + hex.EncodeToString(sum[:16])
}

// Port is the port a claim stored under data key key names.
func (c *Claims) Port(key string) (Key, Claim) {
	cl := c.ByKey[key]
	proto, _, _ := strings.Cut(key, ".")
	p, _ := ParseProtocol(proto)
	return Key{Protocol: p, Port: cl.Port}, cl
}

// Find returns owner's claim for proto.
func (c *Claims) Find(owner string, proto Protocol) (Claim, bool) {
	cl, ok := c.ByKey[ClaimKey(owner, proto)]
	return cl, ok && cl.Owner == owner
}

// Put records owner's claim for proto.
func (c *Claims) Put(proto Protocol, cl Claim) { c.ByKey[ClaimKey(cl.Owner, proto)] = cl }

// Drop removes owner's claim for proto if it names port and lapses at
// expires (an entry's Expires: 0 once bound), so that a claim made again for
// the same port since is kept (unless made in the same second for a
// reservation as well). It reports whether it dropped one.
func (c *Claims) Drop(owner string, proto Protocol, port int, expires int64) bool {
	key := ClaimKey(owner, proto)
	if cl, ok := c.ByKey[key]; ok && cl.Owner == owner && cl.Port == port && cl.Expires == expires {
		delete(c.ByKey, key)
		return true
	}
	return false
}

// Held counts the claims of owners in namespace ns that have not lapsed.
func (c *Claims) Held(ns string, now time.Time) int {
	n := 0
	for _, cl := range c.ByKey {
		if !cl.Lapsed(now) && strings.HasPrefix(cl.Owner, ns+"/") {
			n++
		}
	}
	return n
}

// Repair drops the claims made before before that bears does not bear out:
// bears reports the live entry of port k, if owner holds it. A claim whose
// entry is there gets the entry's expiry when that is later, or none once
// bound: entries read before a claim's write never make it lapse sooner. It
// returns how many claims it dropped.
func (c *Claims) Repair(bears func(k Key, owner string) (Entry, bool), before time.Time) int {
	dropped := 0
	for key := range c.ByKey {
		k, cl := c.Port(key)
		e, ok := bears(k, cl.Owner)
		switch {
		case ok && cl.Expires != 0 && (e.Expires == 0 || e.Expires > cl.Expires):
			cl.Expires = e.Expires
			c.ByKey[key] = cl
		case !ok && cl.Since < before.Unix():
			delete(c.ByKey, key)
			dropped++
		}
	}
	return dropped
}

// Encode writes the claims as ConfigMap data.
func (c *Claims) Encode() map[string]string {
	data := make(map[string]string, len(c.ByKey))
	for k, cl := range c.ByKey {
		b, _ := json.Marshal(cl)
		data[k] = string(b)
	}
	return data
}

// DecodeClaims reads ConfigMap data written by Encode. A claim it cannot read,
// or whose key is not its owner's, is an error: berth never overwrites what it
// does not understand.
func DecodeClaims(data map[string]string) (*Claims, error) {
	c := NewClaims()
	for k, v := range data {
		var cl Claim
		proto, _, _ := strings.Cut(k, ".")
		p, err := ParseProtocol(proto)
		if proto == "" || err != nil || json.Unmarshal([]byte(v), &cl) != nil ||
			ValidateOwner(cl.Owner) != nil || cl.Port < 1 || cl.Port > 65535 || ClaimKey(cl.Owner, p) != k {
			return nil, fmt.Errorf("%w: claim %q", ErrCorrupt, k)
		}
		c.ByKey[k] = cl
	}
	return c, nil
}
