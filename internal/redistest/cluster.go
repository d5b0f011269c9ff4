package redistest

import (
	"errors"
	"testing"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/internal/redisproc"
)

// ClusterTimeout bounds how long a cluster may take to form, and a
// resharding or a failover to settle.
const ClusterTimeout = redisproc.ClusterTimeout

// ClusterOptions configures a cluster started with StartCluster; see
// redisproc.ClusterOptions. The zero value is three masters without
// replicas and without persistence.
type ClusterOptions = redisproc.ClusterOptions

// Cluster is a Redis Cluster of local redis-server processes owned by one
// test. Its Nodes, Masters, Topology, Reshard and WaitOK are those of
// redisproc.Cluster.
type Cluster struct {
	*redisproc.Cluster
}

// StartCluster starts a Redis Cluster (redis-server --cluster-enabled yes
// on free ports, joined by redis-cli --cluster create) and stops it when
// the test ends. It fails the test, with a hint on how to install them,
// if redis-server or redis-cli is missing.
func StartCluster(tb testing.TB, opts ClusterOptions) *Cluster {
	tb.Helper()
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	c, err := redisproc.StartCluster(opts)
	switch {
	case errors.Is(err, redisproc.ErrNotInstalled), errors.Is(err, redisproc.ErrCLINotInstalled):
		tb.Fatalf("%v", err)
	case err != nil:
		tb.Fatalf("redistest: %v", err)
	}
	tb.Cleanup(func() {
		c.Close()
		if tb.Failed() {
			for _, n := range c.Nodes {
				tb.Logf("redistest: last lines of the log of cluster node %s:\n%s", n.Addr(), n.LogTail(10))
			}
		}
	})
	return &Cluster{c}
}

// ClientOption returns the rueidis options Client uses: every node as an
// initial address, so that rueidis finds the cluster from any of them.
func (c *Cluster) ClientOption() rueidis.ClientOption {
	return rueidis.ClientOption{InitAddress: c.Addrs(), DisableCache: true}
}

// Client returns a new rueidis Cluster client of the cluster, closed when
// the test ends.
func (c *Cluster) Client(tb testing.TB) rueidis.Client {
	tb.Helper()
	return newClient(tb, c.ClientOption())
}

// SentinelOptions configures the servers started with StartSentinel; see
// redisproc.SentinelOptions. The zero value is one primary, one replica
// and three sentinels, without persistence.
type SentinelOptions = redisproc.SentinelOptions

// Sentinel is a primary, its replicas and three sentinels owned by one
// test. Its Data, Sentinels, Primary and WaitFailover are those of
// redisproc.Sentinel.
type Sentinel struct {
	*redisproc.Sentinel
}

// StartSentinel starts a primary, its replicas and the sentinels that
// watch them, and stops them when the test ends. It fails the test if
// redis-server is missing or the setup does not settle in time.
func StartSentinel(tb testing.TB, opts SentinelOptions) *Sentinel {
	tb.Helper()
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	s, err := redisproc.StartSentinel(opts)
	switch {
	case errors.Is(err, redisproc.ErrNotInstalled):
		tb.Fatalf("%v", err)
	case err != nil:
		tb.Fatalf("redistest: %v", err)
	}
	tb.Cleanup(func() {
		s.Close()
		if tb.Failed() {
			for _, n := range append(s.Data, s.Sentinels...) {
				tb.Logf("redistest: last lines of the log of %s:\n%s", n.Addr(), n.LogTail(10))
			}
		}
	})
	return &Sentinel{s}
}

// ClientOption returns the rueidis options Client uses: the sentinels'
// addresses and the master name, so that rueidis follows the primary
// through a failover.
func (s *Sentinel) ClientOption() rueidis.ClientOption {
	return rueidis.ClientOption{
		InitAddress:  s.SentinelAddrs(),
		Sentinel:     rueidis.SentinelOption{MasterSet: s.MasterName()},
		DisableCache: true,
	}
}

// Client returns a new rueidis client that reaches the primary through
// the sentinels, closed when the test ends.
func (s *Sentinel) Client(tb testing.TB) rueidis.Client {
	tb.Helper()
	return newClient(tb, s.ClientOption())
}

// newClient connects with opt and closes the client when the test ends.
func newClient(tb testing.TB, opt rueidis.ClientOption) rueidis.Client {
	tb.Helper()
	c, err := rueidis.NewClient(opt)
	if err != nil {
		tb.Fatalf("redistest: connect to %v: %v", opt.InitAddress, err)
	}
	tb.Cleanup(c.Close)
	return c
}
