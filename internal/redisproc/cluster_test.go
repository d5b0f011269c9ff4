package redisproc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClusterFormsAndReshards(t *testing.T) {
	c, err := StartCluster(ClusterOptions{Replicas: 1})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.Len(t, c.Nodes, 6)

	masters, err := c.Masters()
	require.NoError(t, err)
	require.Len(t, masters, 3)
	total := 0
	for _, m := range masters {
		total += m.Slots
		assert.InDelta(t, 16384/3, m.Slots, 2)
	}
	assert.Equal(t, 16384, total)
	nodes, err := c.Topology()
	require.NoError(t, err)
	replicas := 0
	for _, n := range nodes {
		if !n.Master {
			replicas++
			assert.NotEmpty(t, n.MasterID)
		}
	}
	assert.Equal(t, 3, replicas)

	info, err := DoString(c.Nodes[0].Addr(), "CLUSTER", "INFO")
	require.NoError(t, err)
	assert.Equal(t, "ok", infoField(info, "cluster_state"))

	require.NoError(t, c.Reshard(masters[0].ID, masters[1].ID, 100))
	after, err := c.Masters()
	require.NoError(t, err)
	slots := map[string]int{}
	for _, m := range after {
		slots[m.ID] = m.Slots
	}
	assert.Equal(t, masters[0].Slots-100, slots[masters[0].ID])
	assert.Equal(t, masters[1].Slots+100, slots[masters[1].ID])
}

func TestClusterURL(t *testing.T) {
	c := &Cluster{Nodes: []*Server{{port: 7000}, {port: 7001}, {port: 7002}}}
	assert.Equal(t, "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002", c.URL())
}

func TestClusterWithoutRedisCLI(t *testing.T) {
	// A PATH with redis-server but not redis-cli.
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.Symlink(bin, filepath.Join(dir, "redis-server")))
	t.Setenv("PATH", dir)
	_, err = StartCluster(ClusterOptions{})
	require.ErrorIs(t, err, ErrCLINotInstalled)
	assert.Contains(t, err.Error(), "apt-get install redis-tools")
}

// TestClusterJoinedAgainAfterUnreachableNode: a redis-cli --cluster
// create that fails on a connection refused, here once it had joined the
// nodes (a redis-cli that says so after running the real one), is made
// again from nodes reset, and the cluster forms.
func TestClusterJoinedAgainAfterUnreachableNode(t *testing.T) {
	cli, err := exec.LookPath("redis-cli")
	require.NoError(t, err)
	dir := t.TempDir()
	failed := filepath.Join(dir, "failed")
	script := "#!/bin/sh\n" +
		"if [ \"$2\" = create ] && [ ! -e " + failed + " ]; then\n" +
		"  touch " + failed + "\n" +
		"  " + cli + " \"$@\" >/dev/null 2>&1\n" +
		"  echo 'Could not connect to Redis at 127.0.0.1:1: Connection refused'\n" +
		"  exit 1\n" +
		"fi\n" +
		"exec " + cli + " \"$@\"\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "redis-cli"), []byte(script), 0o755))
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))

	c, err := StartCluster(ClusterOptions{})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	assert.FileExists(t, failed, "the first create failed")
	masters, err := c.Masters()
	require.NoError(t, err)
	assert.Len(t, masters, 3)
	for _, s := range c.Nodes {
		info, err := DoString(s.Addr(), "CLUSTER", "INFO")
		require.NoError(t, err)
		assert.Equal(t, "ok", infoField(info, "cluster_state"))
		assert.Equal(t, "3", infoField(info, "cluster_known_nodes"))
	}
}

func TestParseClusterNodes(t *testing.T) {
	text := "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n" +
		"b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922 [10923->-c3]\n" +
		"c3 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected 10923 10924-16383\n" +
		"d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected\n"
	nodes := parseClusterNodes(text)
	require.Len(t, nodes, 4)
	assert.Equal(t, ClusterNode{ID: "a1", Addr: "127.0.0.1:7000", Master: true, Slots: 5461, Ranges: [][2]int{{0, 5460}}}, nodes[0])
	assert.Equal(t, 5462, nodes[1].Slots, "a slot being migrated is not counted twice")
	assert.True(t, nodes[2].Failed)
	assert.Equal(t, 5461, nodes[2].Slots)
	assert.True(t, nodes[2].Serves(10923))
	assert.True(t, nodes[2].Serves(16383))
	assert.False(t, nodes[2].Serves(10922))
	assert.Equal(t, ClusterNode{ID: "d4", Addr: "127.0.0.1:7003", MasterID: "a1"}, nodes[3])
}

func TestClusterMoveSlotHalfWay(t *testing.T) {
	c, err := StartCluster(ClusterOptions{})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	slot, err := c.SlotOf("{t}")
	require.NoError(t, err)
	from, err := c.Owner(slot)
	require.NoError(t, err)
	masters, err := c.Masters()
	require.NoError(t, err)
	var to ClusterNode
	for _, m := range masters {
		if m.ID != from.ID {
			to = m
		}
	}
	keys := []string{"{t}a", "{t}b", "{t}c", "{t}d"}
	for _, k := range keys {
		_, err := Do(from.Addr, "SET", k, k)
		require.NoError(t, err)
	}

	held := false
	require.NoError(t, c.MoveSlot(slot, to.ID, func() {
		held = true
		_, err := Do(from.Addr, append([]string{"MGET"}, keys...)...)
		assert.ErrorContains(t, err, "TRYAGAIN", "some keys of the slot have moved")
		moved := 0
		for _, k := range keys {
			if _, err := Do(from.Addr, "GET", k); err != nil {
				assert.ErrorContains(t, err, "ASK")
				moved++
			}
		}
		assert.Equal(t, 2, moved, "half of the keys have moved")
	}))
	assert.True(t, held)
	owner, err := c.Owner(slot)
	require.NoError(t, err)
	assert.Equal(t, to.ID, owner.ID)
	for _, k := range keys {
		v, err := DoString(to.Addr, "GET", k)
		require.NoError(t, err)
		assert.Equal(t, k, v)
	}
}

func TestClusterOfOneAndTwoMasters(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			c, err := StartCluster(ClusterOptions{Masters: n})
			require.NoError(t, err)
			t.Cleanup(c.Close)
			masters, err := c.Masters()
			require.NoError(t, err)
			require.Len(t, masters, n)
			for _, m := range masters {
				assert.Equal(t, 16384/n, m.Slots)
			}
		})
	}
	_, err := StartCluster(ClusterOptions{Masters: 2, Replicas: 1})
	assert.ErrorContains(t, err, "cannot have replicas")
}
