// Command etcd is the etcd server at the version k8s.io/kubernetes pins,
// built from its Go module so the control plane does not depend on the
// distribution's (older) etcd package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
