package chartrepo

import (
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PushStaticBase pushes a base image like distroless/static:nonroot, made
// offline (no files, user 65532), to the registry at host (plain HTTP), for ko
// to build on. It returns the image's reference.
func PushStaticBase(host string) (string, error) {
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: "amd64", Config: v1.Config{User: "65532"}})
	if err != nil {
		return "", err
	}
	ref, err := name.ParseReference(host+"/base/static:nonroot", name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, base); err != nil {
		return "", err
	}
	return ref.String(), nil
}
