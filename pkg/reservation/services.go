package reservation

import (
	"context"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// KubeServices answers Services.Exists from the API server.
type KubeServices struct{ Client kubernetes.Interface }

// Exists reports whether the Service namespace/name exists.
func (k KubeServices) Exists(ctx context.Context, namespacedName string) (bool, error) {
	ns, name, ok := strings.Cut(namespacedName, "/")
	if !ok {
		return false, nil
	}
	_, err := k.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}
