package reservation

import (
	"strings"

	"github.com/google/uuid"
)

// anonymousPrefix begins the name of an owner GET /getport made up.
const anonymousPrefix = "getport-"

// AnonymousOwner is a fresh owner in namespace ns for a reservation asked for
// without one (the 2018 GET /getport): <ns>/getport-<uuid>. Such a
// reservation may be named by anyone who may expose in ns (Anonymous), and
// lapses unless it is bound.
func AnonymousOwner(ns string) string { return ns + "/" + anonymousPrefix + uuid.NewString() }

// Anonymous reports whether owner is one AnonymousOwner made up.
func Anonymous(owner string) bool {
	_, name, _ := strings.Cut(owner, "/")
	return strings.HasPrefix(name, anonymousPrefix)
}
