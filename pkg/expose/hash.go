package expose

import (
	"encoding/hex"
	"hash/fnv"
)

func shortHash(s string) string {
	h := fnv.New32a()
	h.Write([]byte(s))
	return hex.EncodeToString(h.Sum(nil))
}
