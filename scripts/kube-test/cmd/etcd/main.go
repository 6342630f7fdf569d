// Command etcd is etcd's own main (go.etcd.io/etcd/server/v3/etcdmain), built
// here at the version that k8s.io/kubernetes requires, so that the test control
// plane needs no etcd package from the system.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
